"""Pod-spec pieces both training and serving clusters share."""

from typing import Any

from llmkube.api.common import NodePool, StorageSpec
from llmkube.api.runconfig import ACCESS_KEY_ENV, SECRET_KEY_ENV

# The node label NVIDIA GPU feature discovery sets; nodePool.accelerator is a shortcut for it.
ACCELERATOR_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"


def storage_env(storage: StorageSpec) -> list[dict[str, Any]]:
    """S3 credentials from the user's Secret, by reference only."""
    secret = storage.credentials_secret
    if secret is None:
        return []
    return [
        {
            "name": env,
            "valueFrom": {"secretKeyRef": {"name": secret.name, "key": key}},
        }
        for env, key in (
            (ACCESS_KEY_ENV, secret.access_key_id_key),
            (SECRET_KEY_ENV, secret.secret_access_key_key),
        )
    ]


def scheduling(pool: NodePool) -> dict[str, Any]:
    """nodeSelector / tolerations / affinity for a pod spec, from a node pool."""
    selector = dict(pool.node_selector)
    if pool.accelerator:
        selector[ACCELERATOR_LABEL] = pool.accelerator
    placed: dict[str, Any] = {}
    if selector:
        placed["nodeSelector"] = selector
    if pool.tolerations:
        placed["tolerations"] = [t.to_wire() for t in pool.tolerations]
    if pool.affinity:
        placed["affinity"] = pool.affinity
    return placed


def resources(cpus: int, memory: str, gpus: int) -> dict[str, dict[str, str]]:
    """Requests equal to limits: GPUs (extended resources) require it; pods stay Guaranteed."""
    amounts = {"cpu": str(cpus), "memory": memory}
    if gpus:
        amounts[GPU_RESOURCE] = str(gpus)
    return {"requests": amounts, "limits": dict(amounts)}


POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
"""The runtime image runs as uid 1000; an image that runs as root is refused by the kubelet."""
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def locked_down(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A pod spec whose containers run unprivileged, without the namespace's ServiceAccount
    token (Ray's processes never call the Kubernetes API)."""
    return {
        "automountServiceAccountToken": False,
        "securityContext": POD_SECURITY_CONTEXT,
        "containers": [
            {**container, "securityContext": CONTAINER_SECURITY_CONTEXT} for container in containers
        ],
        **spec,
    }
