"""Pure builders: a validated LLMDeployment -> RayService, Service and ServiceMonitor.

What rolls out how: the Serve config and the worker count change in place (KubeRay leaves worker
replica counts out of its cluster hash and applies Serve config changes to the running
cluster). The model version is an annotation on the pod templates, so a new model changes the
cluster spec and rolls out through the RayService's upgrade strategy (NewCluster: a new cluster
takes the traffic once it is ready).
"""

import json
from pathlib import PurePosixPath
from typing import Any

from llmkube.api import LLMDeployment
from llmkube.api.contract import serve_config
from llmkube.api.runconfig import API_KEYS_DIR, API_KEYS_FILE, ServeRunConfig
from llmkube.operator.kueue import kueue_labels
from llmkube.operator.naming import (
    APPLIED_SPEC_ANNOTATION,
    DEPLOYMENT_LABEL,
    MODEL_VERSION_ANNOTATION,
    RAY_CLUSTER_LABEL,
    RAY_SERVE_LABEL,
    child_metadata,
    label_value,
    rayservice_name,
    standard_labels,
)
from llmkube.operator.network_policy import build_network_policy
from llmkube.operator.pods import locked_down, resources, scheduling, storage_env
from llmkube.operator.settings import OperatorSettings

SERVE_PORT = 8000
METRICS_PORT = 8080


def _labels(deployment: LLMDeployment) -> dict[str, str]:
    return {
        **standard_labels(deployment.metadata.name, "serving"),
        DEPLOYMENT_LABEL: label_value(deployment.metadata.name),
    }


def _metadata(deployment: LLMDeployment, name: str) -> dict[str, Any]:
    return child_metadata("LLMDeployment", deployment.metadata, name, _labels(deployment))


def pod_selector(deployment: LLMDeployment, serving_cluster: str) -> dict[str, str]:
    """Pods of the Ray cluster KubeRay routes traffic to whose Serve proxy is healthy (KubeRay's
    ray.io/serve). Naming the cluster matters during a rollout: the new cluster's pods carry the
    same labels, and are Ready, before its Serve application is."""
    return {
        DEPLOYMENT_LABEL: label_value(deployment.metadata.name),
        RAY_CLUSTER_LABEL: serving_cluster,
        RAY_SERVE_LABEL: "true",
    }


API_KEYS_VOLUME = "api-keys"


def _api_keys(deployment: LLMDeployment) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) that put the API-key Secret where the replicas read it: a mounted
    Secret follows a rotation, an environment variable would not."""
    secret = deployment.spec.serving.api_key_secret
    if secret is None:
        return [], []
    volume = {
        "name": API_KEYS_VOLUME,
        "secret": {
            "secretName": secret.name,
            "items": [{"key": secret.key, "path": PurePosixPath(API_KEYS_FILE).name}],
        },
    }
    mount = {"name": API_KEYS_VOLUME, "mountPath": API_KEYS_DIR, "readOnly": True}
    return [volume], [mount]


def _pod_template(
    deployment: LLMDeployment, container: dict[str, Any], model_version: str, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "labels": _labels(deployment),
            "annotations": {MODEL_VERSION_ANNOTATION: model_version},
        },
        "spec": locked_down([container], **spec),
    }


def applied_spec(deployment: LLMDeployment) -> str:
    """The spec a RayService was built from, minus replicas (which /scale changes in place)."""
    wire = deployment.spec.to_wire() | {"replicas": None}
    return json.dumps(wire, sort_keys=True, separators=(",", ":"))


def build_rayservice(
    deployment: LLMDeployment, run_config: ServeRunConfig, *, model_version: str, default_image: str
) -> dict[str, Any]:
    spec = deployment.spec
    image = spec.image or default_image
    unbuffered = {"name": "PYTHONUNBUFFERED", "value": "1"}
    volumes, mounts = _api_keys(deployment)
    ports = [
        {"name": "serve", "containerPort": SERVE_PORT},
        {"name": "metrics", "containerPort": METRICS_PORT},
    ]
    head = {
        "name": "ray-head",
        "image": image,
        # The head runs Serve's controller and proxy only: no model, no keys.
        "env": [unbuffered],
        "resources": resources(2, "4Gi", 0),
        "ports": [
            {"name": "gcs", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            *ports,
        ],
    }
    worker = {
        "name": "ray-worker",
        "image": image,
        "env": [*storage_env(spec.storage), unbuffered],
        "volumeMounts": mounts,
        "resources": resources(
            spec.resources.cpus_per_replica,
            spec.resources.memory_per_replica,
            spec.resources.gpus_per_replica,
        ),
        "ports": ports,
    }
    metadata = _metadata(deployment, rayservice_name(deployment.metadata.name))
    metadata["labels"] |= kueue_labels(spec.scheduling)
    # What the operator keeps following should the spec later turn invalid.
    metadata["annotations"] = {APPLIED_SPEC_ANNOTATION: applied_spec(deployment)}
    cluster: dict[str, Any] = {}
    if spec.scheduling.queue_name is not None:
        # Kueue creates queued clusters suspended and resumes them on admission.
        cluster["suspend"] = True
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": metadata,
        "spec": {
            "upgradeStrategy": {"type": spec.rollout.strategy},
            "serveConfigV2": json.dumps(serve_config(run_config), indent=2, sort_keys=True),
            # Only workers serve: each replica has a worker pod of its own.
            "excludeHeadPodFromServeSvc": True,
            "rayClusterConfig": {
                **cluster,
                "headGroupSpec": {
                    # KubeRay deploys Serve configs through the dashboard, on the pod's address;
                    # the NetworkPolicy admits only the KubeRay operator to it.
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod_template(deployment, head, model_version),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "replicas",
                        "replicas": spec.replicas,
                        "minReplicas": spec.replicas,
                        "maxReplicas": spec.replicas,
                        "rayStartParams": {},
                        "template": _pod_template(
                            deployment,
                            worker,
                            model_version,
                            volumes=volumes,
                            **scheduling(spec.resources.node_pool),
                        ),
                    }
                ],
            },
        },
    }


def build_deployment_network_policy(
    deployment: LLMDeployment, settings: OperatorSettings
) -> dict[str, Any]:
    name = deployment.metadata.name
    return build_network_policy(
        # Named by kind: a training job and a deployment may share a name.
        _metadata(deployment, f"{rayservice_name(name)}-serving"),
        {DEPLOYMENT_LABEL: label_value(name)},
        metrics_port=METRICS_PORT,
        serving_port=SERVE_PORT,
        settings=settings,
    )


def build_service(deployment: LLMDeployment, serving_cluster: str | None) -> dict[str, Any]:
    """The stable in-cluster address of the OpenAI API (and of the serving metrics), sending
    traffic to `serving_cluster`, the RayService's active cluster. Before KubeRay has made one
    active, the Service selects nothing: no pod serves the model yet."""
    spec: dict[str, Any] = {
        "ports": [
            {"name": "openai", "port": SERVE_PORT, "targetPort": "serve"},
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"},
        ],
        "selector": None if serving_cluster is None else pod_selector(deployment, serving_cluster),
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(deployment, deployment.metadata.name),
        "spec": spec,
    }


def build_service_monitor(deployment: LLMDeployment) -> dict[str, Any]:
    monitoring = deployment.spec.monitoring
    metadata = _metadata(deployment, deployment.metadata.name)
    metadata["labels"] = {**metadata["labels"], **monitoring.labels}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata,
        "spec": {
            "selector": {"matchLabels": {DEPLOYMENT_LABEL: label_value(deployment.metadata.name)}},
            "endpoints": [{"port": "metrics", "interval": f"{monitoring.interval_seconds}s"}],
        },
    }


def endpoint(deployment: LLMDeployment) -> str:
    meta = deployment.metadata
    return f"http://{meta.name}.{meta.namespace}.svc.cluster.local:{SERVE_PORT}/v1"


def selector(deployment: LLMDeployment) -> str:
    """The serving pods' label selector, as the /scale subresource reports it."""
    return f"{DEPLOYMENT_LABEL}={label_value(deployment.metadata.name)}"
