"""Operator settings, from LLMKUBE_* environment variables (the Helm chart sets them)."""

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field

DEFAULT_RUNTIME_IMAGE = "llmkube/runtime:0.1.0"


class OperatorSettings(BaseModel):
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    """LLMKUBE_RUNTIME_IMAGE: image of the Ray pods when a resource names none."""
    s3_endpoint: str | None = None
    """LLMKUBE_S3_ENDPOINT: S3 endpoint when a resource's storage.endpoint is empty."""
    prometheus_url: str | None = None
    """LLMKUBE_PROMETHEUS_URL: Prometheus the autoscaler queries by default."""
    namespaces: list[str] = Field(default_factory=list)
    """LLMKUBE_NAMESPACES: comma-separated namespaces to watch; empty watches all."""
    metrics_port: int = 8000
    """LLMKUBE_METRICS_PORT: port of the Prometheus /metrics endpoint."""
    health_port: int = 8080
    """LLMKUBE_HEALTH_PORT: port of the /healthz liveness endpoint."""
    progress_interval_seconds: float = 15.0
    """LLMKUBE_PROGRESS_INTERVAL_SECONDS: how often running jobs' progress is read."""
    network_policies: bool = True
    """LLMKUBE_NETWORK_POLICIES: give each job's and deployment's Ray pods a NetworkPolicy."""
    ray_operator_namespace: str | None = None
    """LLMKUBE_RAY_OPERATOR_NAMESPACE: where the KubeRay operator runs (it submits jobs and Serve
    configs to the Ray dashboard); empty admits its pods from any namespace."""
    ray_operator_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "kuberay-operator"}
    )
    """LLMKUBE_RAY_OPERATOR_LABELS: labels of the KubeRay operator's pods, as k=v,k=v."""
    monitoring_namespace: str = "monitoring"
    """LLMKUBE_MONITORING_NAMESPACE: the namespace whose pods (Prometheus) may scrape metrics."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "OperatorSettings":
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            raw = env.get(f"LLMKUBE_{name.upper()}")
            if raw is None or raw == "":
                continue
            items = [item.strip() for item in raw.split(",") if item.strip()]
            if name == "namespaces":
                values[name] = items
            elif name == "ray_operator_labels":
                values[name] = dict(item.partition("=")[::2] for item in items)
            else:
                values[name] = raw
        return cls.model_validate(values)
