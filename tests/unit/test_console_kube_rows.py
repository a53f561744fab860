"""How the cluster source turns LLMTrainingJob and LLMDeployment objects into rows (pure)."""

from typing import Any

import pytest

from llmkube.console.kube_source import deployment_row, job_row
from llmkube.console.source import DeploymentRow, JobRow


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, JobRow("j", "ns", "Pending", created="2026-11-30T12:00:00Z")),
        (
            {
                "phase": "Running",
                "progress": {"step": 250, "totalSteps": 1000, "etaSeconds": 90.0},
                "metrics": {"trainLoss": 3.25, "evalLoss": 3.4, "tokensPerSecond": 812.5},
            },
            JobRow("j", "ns", "Running", 250, 1000, 3.25, 3.4, 812.5, 90.0, "2026-11-30T12:00:00Z"),
        ),
    ],
)
def test_a_job_row_comes_from_the_objects_status(status: dict[str, Any], expected: JobRow) -> None:
    raw = {
        "metadata": {"name": "j", "namespace": "ns", "creationTimestamp": "2026-11-30T12:00:00Z"},
        "spec": {},
        "status": status,
    }
    assert job_row(raw) == expected


def _deployment(spec: dict[str, Any], status: dict[str, Any]) -> DeploymentRow:
    return deployment_row(
        {"metadata": {"name": "chat", "namespace": "team"}, "spec": spec, "status": status}
    )


def test_a_deployment_serves_only_when_ready_or_degraded() -> None:
    status = {"endpoint": "http://chat.team.svc:8000/v1", "readyReplicas": 2}
    assert _deployment({"replicas": 2}, {**status, "phase": "Deploying"}).endpoint is None
    for phase in ("Ready", "Degraded"):
        row = _deployment({"replicas": 2}, {**status, "phase": phase})
        assert row.endpoint == "http://chat.team.svc:8000/v1"
        assert (row.ready_replicas, row.replicas, row.max_replicas) == (2, 2, 2)


def test_an_autoscaled_deployment_shows_its_bounds_and_latest_decisions_first() -> None:
    history = [
        {"time": f"t{i}", "fromReplicas": i, "toReplicas": i + 1, "reason": f"r{i}"}
        for i in range(1, 5)
    ]
    row = _deployment(
        {"replicas": 1, "autoscaling": {"enabled": True, "maxReplicas": 6}},
        {"phase": "Ready", "desiredReplicas": 5, "autoscaling": {"history": history}},
    )
    assert (row.replicas, row.max_replicas) == (5, 6)
    assert row.decisions == ["t4: 4 → 5 (r4)", "t3: 3 → 4 (r3)", "t2: 2 → 3 (r2)"]
    assert row.series == 'namespace="team",deployment="chat"'


def test_a_keyed_deployment_asks_the_person_for_a_key() -> None:
    keyed = _deployment({"serving": {"apiKeySecret": {"name": "keys"}}}, {})
    assert keyed.needs_api_key
    assert not _deployment({"serving": {"allowUnauthenticated": True}}, {}).needs_api_key
    assert keyed.phase == "Pending"
