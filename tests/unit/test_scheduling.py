"""Pods the scheduler cannot place, said in the spec's terms (llmkube.operator.scheduling)."""

from typing import Any

import pytest

from llmkube.operator.scheduling import waiting_for

A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


def pod(
    *,
    scheduled: str | None = None,
    requests: dict[str, str] | None = None,
    selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Ray pod; `scheduled` is the scheduler's Unschedulable message (None: placed)."""
    conditions = (
        [{"type": "PodScheduled", "status": "True"}]
        if scheduled is None
        else [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": scheduled,
            }
        ]
    )
    return {
        "spec": {
            "containers": [{"name": "ray-worker", "resources": {"requests": requests or {}}}],
            "nodeSelector": selector or {},
        },
        "status": {"conditions": conditions},
    }


WORKER = {"nvidia.com/gpu": "16", "cpu": "8", "memory": "32Gi"}
TOO_MANY = (
    "0/6 nodes are available: 2 Insufficient nvidia.com/gpu, 4 node(s) didn't match Pod's node "
    "affinity/selector. no new claims to deallocate, preemption: 0/6 nodes are available: 2 No "
    "preemption victims found for incoming pod, 4 Preemption is not helpful for scheduling."
)
NO_POOL = "0/6 nodes are available: 6 node(s) didn't match Pod's node affinity/selector."


@pytest.mark.parametrize(
    ("pods", "says"),
    [
        ([], None),
        ([pod(), pod(requests=WORKER, selector=A100)], None),
        (
            [pod(), pod(scheduled=TOO_MANY, requests=WORKER, selector=A100)],
            [
                "1 of 2 Ray pods cannot be scheduled",
                "each needs 16 x nvidia.com/gpu, 8 CPUs, 32Gi of memory on nodes labelled "
                "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB",
                "\"0/6 nodes are available: 2 Insufficient nvidia.com/gpu, 4 node(s) didn't match "
                "Pod's node affinity/selector.\"",
                "ask for less per worker (spec.resources), or add nodes to the pool",
            ],
        ),
        (
            [pod(scheduled=NO_POOL, requests={"cpu": "2"}, selector={"pool": "h100"})] * 3,
            [
                "3 of 3 Ray pods cannot be scheduled",
                "each needs 2 CPUs on nodes labelled pool=h100",
                "no node carries those labels: check spec.resources.nodePool",
            ],
        ),
        (
            [pod(scheduled="0/1 nodes are available: 1 node(s) were unschedulable.")],
            ["needs no resources on any node", "see the scheduler's reason"],
        ),
    ],
)
def test_what_the_pods_wait_for(pods: list[dict[str, Any]], says: list[str] | None) -> None:
    message = waiting_for(pods)
    if says is None:
        assert message is None
        return
    assert message is not None
    for part in says:
        assert part in message
    # The scheduler's notes on preemption and claims say nothing a user can act on.
    assert "preemption" not in message
    assert "claims" not in message


def test_only_the_unbound_pods_of_a_larger_cluster() -> None:
    # The operator lists only pods without a node; `of` says how many the cluster has in all.
    waiting = pod(scheduled="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.")
    message = waiting_for([waiting], of=3)
    assert message is not None
    assert message.startswith("1 of 3 Ray pods cannot be scheduled")
