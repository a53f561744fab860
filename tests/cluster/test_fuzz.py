"""Hypothesis-generated manifests against the real apiserver with the operator running: whatever
the apiserver accepts gets a status from the operator, and the operator never crashes."""

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.operator import OperatorProcess
from tests.cluster.helpers import eventually, get
from tests.manifest_fuzz import example, mutate

MANIFESTS = 60
"""Per run: each costs an apply and a reconcile; CI runs one fixed draw (derandomize), a longer
local run can raise it."""
KINDS = {"LLMTrainingJob": "ltj", "LLMDeployment": "llmd"}


def _manifest(data: st.DataObject, index: int) -> dict[str, Any]:
    source = data.draw(st.sampled_from(["training-job.yaml", "deployment.yaml"]))
    doc = mutate(example(source), data)
    # The spec is fuzzed, not the identity: every document is its own object.
    doc["apiVersion"], doc["kind"] = "llmkube.io/v1alpha1", example(source)["kind"]
    doc["metadata"] = {"name": f"fuzz-{index}"}
    return doc


def test_every_accepted_object_gets_a_status_and_the_operator_survives(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    accepted: list[tuple[str, str]] = []
    refused: list[str] = []

    @settings(
        max_examples=MANIFESTS,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def apply_one(data: st.DataObject) -> None:
        doc = _manifest(data, len(accepted) + len(refused))
        created = control_plane.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(doc))
        if created.returncode == 0:
            accepted.append((KINDS[doc["kind"]], doc["metadata"]["name"]))
        else:
            refused.append(created.stderr)

    apply_one()
    # A draw that exercises both sides of the apiserver's validation.
    assert len(accepted) >= 5, refused
    assert len(refused) >= 5, accepted

    def all_have_a_status() -> None:
        missing = []
        for kind, name in accepted:
            body = get(control_plane, kind, name, namespace)
            status = body.get("status") or {}
            current = status.get("observedGeneration") == body["metadata"]["generation"]
            if not status.get("phase") or not current:
                missing.append(f"{kind}/{name}: {status}")
        assert not missing, missing

    eventually(all_have_a_status, timeout=90)
    assert operator.healthy()
    assert "Traceback" not in operator.log(), operator.log()[-5000:]
