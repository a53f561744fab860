"""The NetworkPolicy that fences in the Ray pods of one training job or deployment.

A Ray cluster's ports are powerful: the dashboard's job API runs any code it is sent, GCS and
the client port hand out the cluster itself. Only the cluster's own pods reach them, plus the
KubeRay operator, which submits jobs and Serve configs to the dashboard. From outside the
cluster's pods, only the OpenAI port of a deployment (its clients authenticate with API keys)
and the metrics port (from the monitoring namespace) are open.
"""

from typing import Any

from llmkube.operator.settings import OperatorSettings

DASHBOARD_PORT = 8265
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by Kubernetes on every namespace (1.21+): selects a namespace by its name."""


def _namespace(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}  # every namespace
    return {"matchLabels": {NAMESPACE_NAME_LABEL: name}}


def build_network_policy(
    metadata: dict[str, Any],
    pods: dict[str, str],
    *,
    metrics_port: int,
    serving_port: int | None,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """A policy for the pods labelled `pods` (head, workers and any submitter of one cluster)."""
    ingress: list[dict[str, Any]] = [
        {"from": [{"podSelector": {"matchLabels": pods}}]},
        {
            "from": [
                {
                    "namespaceSelector": _namespace(settings.ray_operator_namespace),
                    "podSelector": {"matchLabels": settings.ray_operator_labels},
                }
            ],
            "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}],
        },
        {
            "from": [{"namespaceSelector": _namespace(settings.monitoring_namespace)}],
            "ports": [{"protocol": "TCP", "port": metrics_port}],
        },
    ]
    if serving_port is not None:
        ingress.append({"ports": [{"protocol": "TCP", "port": serving_port}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": pods},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
