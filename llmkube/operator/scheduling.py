"""Why a resource's Ray pods wait: the scheduler's Unschedulable condition, said in the terms of
the spec that asked for them (GPUs, CPUs, memory, the pool's labels) with what to change.
Pure: pods in, a sentence out."""

import re
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
_FIRST_SENTENCE = re.compile(r"^.*?\.(?=\s|$)", re.DOTALL)
"""The count of nodes and why they do not fit; what follows (preemption, DRA claims) says
nothing a user can act on."""
_NO_NODE_MATCHES = "didn't match Pod's node affinity/selector"


def scheduler_refusal(pod: dict[str, Any]) -> str | None:
    """The scheduler's message for a pod it could not place; None for any other pod."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            message = str(condition.get("message") or "").strip()
            first = _FIRST_SENTENCE.match(message)
            return first.group(0) if first else message
    return None


def _needs(pod: dict[str, Any]) -> str:
    """What one pod asks for, GPUs first: '4 x nvidia.com/gpu, 8 CPUs, 32Gi of memory'."""
    requests = ((pod["spec"]["containers"] or [{}])[0].get("resources") or {}).get("requests") or {}
    parts = []
    if GPU_RESOURCE in requests:
        parts.append(f"{requests[GPU_RESOURCE]} x {GPU_RESOURCE}")
    if "cpu" in requests:
        parts.append(f"{requests['cpu']} CPUs")
    if "memory" in requests:
        parts.append(f"{requests['memory']} of memory")
    return ", ".join(parts) or "no resources"


def _where(pod: dict[str, Any]) -> str:
    selector = pod["spec"].get("nodeSelector") or {}
    if not selector:
        return "on any node"
    return "on nodes labelled " + ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))


def waiting_for(pods: list[dict[str, Any]], of: int | None = None) -> str | None:
    """Why some of `pods` (one Ray cluster's; `of` of them in all, when `pods` holds only those
    not bound yet) cannot be scheduled; None when none waits on the scheduler. Names the first
    such pod's needs and the scheduler's count of nodes that fit."""
    waiting = [(pod, message) for pod in pods if (message := scheduler_refusal(pod)) is not None]
    if not waiting:
        return None
    pod, message = waiting[0]
    what = f"{len(waiting)} of {of or len(pods)} Ray pods cannot be scheduled"
    need = f"each needs {_needs(pod)} {_where(pod)}"
    if _NO_NODE_MATCHES in message and "Insufficient" not in message:
        hint = (
            "no node carries those labels: check spec.resources.nodePool (accelerator, "
            "nodeSelector) against the cluster's node pools"
        )
    elif "Insufficient" in message:
        hint = (
            "no node with those labels has that much free: ask for less per worker "
            "(spec.resources), or add nodes to the pool"
        )
    else:
        hint = "see the scheduler's reason"
    return f'{what}: {need}. The scheduler says "{message}": {hint}.'
