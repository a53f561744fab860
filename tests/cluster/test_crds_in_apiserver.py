"""The generated CRDs and the examples, served by a real kube-apiserver and used through kubectl."""

import json
import time
from pathlib import Path

import pytest

from llmkube.cli import manifests
from llmkube.testing.controlplane import ControlPlane
from tests.bad_manifests import BadManifest, corpus

ROOT = Path(__file__).parents[2]


def apply_examples(cp: ControlPlane, namespace: str) -> None:
    result = cp.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"))
    assert result.returncode == 0, result.stderr
    assert "llmtrainingjob.llmkube.io/shakespeare created" in result.stdout
    assert "llmdeployment.llmkube.io/shakespeare created" in result.stdout


def test_examples_apply_and_show_printer_columns(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply_examples(control_plane, namespace)
    status = {
        "status": {
            "phase": "Running",
            "progress": {"step": 500, "totalSteps": 5000, "summary": "500/5000 (10%)"},
            "metrics": {"trainLoss": 2.75},
        }
    }
    patched = control_plane.kubectl(
        "patch",
        "ltj",
        "shakespeare",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    assert patched.returncode == 0, patched.stderr

    jobs = control_plane.kubectl("get", "ltj", "-n", namespace).stdout.splitlines()
    assert jobs[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "FINETUNE", "WAITING", "AGE"]
    assert jobs[1].split()[:5] == ["shakespeare", "Running", "500/5000", "(10%)", "2.75"]

    deployments = control_plane.kubectl("get", "llmd", "-n", namespace).stdout.splitlines()
    assert deployments[0].split() == [
        "NAME",
        "PHASE",
        "READY",
        "REPLICAS",
        "ENDPOINT",
        "WAITING",
        "AGE",
    ]
    assert deployments[1].split()[0] == "shakespeare"

    both = control_plane.kubectl("get", "ltj,llmd", "-n", namespace)
    assert both.returncode == 0, both.stderr
    assert "llmtrainingjob.llmkube.io/shakespeare" in both.stdout
    assert "llmdeployment.llmkube.io/shakespeare" in both.stdout
    category = control_plane.kubectl("get", "llmkube", "-n", namespace)
    assert "llmdeployment.llmkube.io/shakespeare" in category.stdout


def test_status_is_a_subresource(control_plane: ControlPlane, namespace: str) -> None:
    apply_examples(control_plane, namespace)
    # A write to the main resource cannot set status.
    control_plane.kubectl(
        "patch",
        "ltj",
        "shakespeare",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"status": {"phase": "Succeeded"}}',
    )
    got = control_plane.kubectl("get", "ltj", "shakespeare", "-n", namespace, "-o", "json")
    assert "status" not in json.loads(got.stdout) or json.loads(got.stdout)["status"] == {}


def test_kubectl_explain_teaches_the_fields(control_plane: ControlPlane) -> None:
    result = control_plane.kubectl("explain", "llmtrainingjob.spec.training")
    assert result.returncode == 0, result.stderr
    assert "maxSteps\t<integer>" in result.stdout
    assert "Optimizer steps to run. Set this or epochs." in result.stdout
    assert "bf16" in result.stdout
    model = control_plane.kubectl("explain", "llmdeployment.spec.model.trainingJobRef")
    assert "Serve what this LLMTrainingJob publishes" in model.stdout


def test_kubectl_scale_goes_through_the_scale_subresource(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply_examples(control_plane, namespace)
    scaled = control_plane.kubectl("scale", "llmd", "shakespeare", "-n", namespace, "--replicas=3")
    assert scaled.returncode == 0, scaled.stderr
    replicas = control_plane.kubectl(
        "get", "llmd", "shakespeare", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
    )
    assert replicas.stdout == "3"
    scale = control_plane.kubectl(
        "get",
        "--raw",
        f"/apis/llmkube.io/v1alpha1/namespaces/{namespace}/llmdeployments/shakespeare/scale",
    )
    assert json.loads(scale.stdout)["spec"]["replicas"] == 3
    too_many = control_plane.kubectl(
        "scale", "llmd", "shakespeare", "-n", namespace, "--replicas=500"
    )
    assert too_many.returncode != 0
    assert "spec.replicas" in too_many.stderr


@pytest.mark.parametrize("bad", corpus(), ids=str)
def test_bad_manifests_are_rejected_naming_the_field(
    control_plane: ControlPlane, namespace: str, bad: BadManifest
) -> None:
    result = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", str(bad.path)
    )
    if bad.apiserver_says is not None:
        assert result.returncode != 0, f"the apiserver accepted {bad}"
        assert bad.apiserver_says in result.stderr, result.stderr
    else:
        # The schema cannot express this rule; the operator's validation (same as `llmkube
        # validate`) must catch it instead.
        assert result.returncode == 0, result.stderr
    doc = manifests.parse(bad.document, source=str(bad.path))
    problems = doc.cluster_problems if bad.cluster_only else doc.problems
    assert any(bad.llmkube_says in problem for problem in problems), doc


def test_third_party_crds_are_the_real_ones(control_plane: ControlPlane) -> None:
    resources = control_plane.kubectl("api-resources", "-o", "name").stdout.split()
    for name in (
        "rayjobs.ray.io",
        "rayservices.ray.io",
        "rayclusters.ray.io",
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
    ):
        assert name in resources
    explained = control_plane.kubectl("explain", "rayjob.spec.rayClusterSpec.workerGroupSpecs")
    assert explained.returncode == 0, explained.stderr


def test_restricted_identity_has_only_what_it_is_granted(
    control_plane: ControlPlane, namespace: str
) -> None:
    denied = control_plane.kubectl("get", "ltj", "-n", namespace, identity=control_plane.restricted)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    role = control_plane.kubectl(
        "create",
        "role",
        "read-jobs",
        "-n",
        namespace,
        "--verb=get,list",
        "--resource=llmtrainingjobs.llmkube.io",
    )
    assert role.returncode == 0, role.stderr
    binding = control_plane.kubectl(
        "create",
        "rolebinding",
        "read-jobs",
        "-n",
        namespace,
        "--role=read-jobs",
        f"--user={control_plane.restricted.user}",
    )
    assert binding.returncode == 0, binding.stderr
    allowed = control_plane.kubectl(
        "get", "ltj", "-n", namespace, identity=control_plane.restricted
    )
    assert allowed.returncode == 0, allowed.stderr
    still_denied = control_plane.kubectl(
        "get", "secrets", "-n", namespace, identity=control_plane.restricted
    )
    assert still_denied.returncode != 0


def test_children_are_garbage_collected_with_their_owner(
    control_plane: ControlPlane, namespace: str
) -> None:
    apply_examples(control_plane, namespace)
    uid = control_plane.kubectl(
        "get", "ltj", "shakespeare", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "shakespeare-run",
            "namespace": namespace,
            "ownerReferences": [
                {
                    "apiVersion": "llmkube.io/v1alpha1",
                    "kind": "LLMTrainingJob",
                    "name": "shakespeare",
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "data": {"run.json": "{}"},
    }
    created = control_plane.kubectl("apply", "-f", "-", input=json.dumps(child))
    assert created.returncode == 0, created.stderr
    deleted = control_plane.kubectl("delete", "ltj", "shakespeare", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        gone = control_plane.kubectl("get", "configmap", "shakespeare-run", "-n", namespace)
        if gone.returncode != 0 and "NotFound" in gone.stderr:
            return
        time.sleep(0.5)
    raise AssertionError("kube-controller-manager did not garbage-collect the owned ConfigMap")
