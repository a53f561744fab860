"""The operator against a real apiserver. Tests in a `fleet_namespace` run with KubeRay's real
controller and the real scheduler (llmkube.testing.fleet), the test deciding only what a live Ray
would (a job's end); the others need no Ray cluster at all (what the operator builds, refuses or
reports before one exists)."""

import io
import json
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.fleet import Fleet
from llmkube.testing.manifests import training_job_manifest
from llmkube.testing.minio import MinioServer
from llmkube.testing.operator import OperatorProcess
from tests.bad_manifests import corpus
from tests.cluster.helpers import (
    apply,
    condition,
    cpu_job,
    credentials_secret,
    events_for,
    eventually,
    exists,
    get,
    listed,
    patch,
    publish_as_the_runtime,
    staged_files,
    status_of,
    wait_phase,
    wait_rayjob,
)

ROOT = Path(__file__).parents[2]


def test_example_job_becomes_a_configmap_and_rayjob(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    result = control_plane.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples"))
    assert result.returncode == 0, result.stderr
    # Created through the apiserver, so the real KubeRay v1.5.0 schema accepted it.
    rayjob = eventually(lambda: get(control_plane, "rayjob", "shakespeare", namespace))
    job = get(control_plane, "ltj", "shakespeare", namespace)

    spec = rayjob["spec"]
    assert spec["entrypoint"] == "python -m llmkube.runtime.train --config /etc/llmkube/run.json"
    assert (spec["backoffLimit"], spec["suspend"], spec["shutdownAfterJobFinishes"]) == (
        3,
        False,
        True,
    )
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2
    pod = workers["template"]["spec"]
    container = pod["containers"][0]
    expected = {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert container["resources"] == {"requests": expected, "limits": expected}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {
        "secretKeyRef": {"name": "minio-credentials", "key": "AWS_ACCESS_KEY_ID"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "minio-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert "nodeSelector" not in head
    assert "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]
    owner = rayjob["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "LLMTrainingJob",
        job["metadata"]["uid"],
        True,
    )
    assert rayjob["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmkube-operator"

    configmap = get(control_plane, "configmap", "shakespeare-run", namespace)
    run = json.loads(configmap["data"]["run.json"])
    assert (run["model"]["nLayer"], run["model"]["contextLength"]) == (6, 512)
    assert run["storage"]["endpoint"] == "minio.minio.svc.cluster.local:9000"
    assert "change-me-please" not in configmap["data"]["run.json"]
    assert configmap["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]

    # The Ray pods are fenced in before they exist, and run unprivileged.
    policy = get(control_plane, "networkpolicy", "shakespeare-training", namespace)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {"llmkube.io/training-job": "shakespeare"}
    }
    submitter = spec["submitterPodTemplate"]
    assert submitter["metadata"]["labels"]["llmkube.io/training-job"] == "shakespeare"
    for template in (submitter, workers["template"]):
        assert template["spec"]["automountServiceAccountToken"] is False
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


def _reasons(cp: ControlPlane, namespace: str, name: str, wanted: set[str]) -> set[str]:
    reasons = {event["reason"] for event in events_for(cp, namespace, name)}
    assert wanted <= reasons, reasons
    return reasons


def test_an_output_holding_another_runs_model_is_refused_before_anything_starts(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    storage = {"endpoint": minio.endpoint, "insecure": True, "credentialsSecret": {"name": "s3"}}
    published = training_job_manifest("first", storage=storage, output=f"s3://{bucket}/shared/")
    publish_as_the_runtime(minio, published, staged_files(tmp_path, {"config.json": b"{}"}))
    changed = training_job_manifest(
        "second",
        storage=storage,
        output=f"s3://{bucket}/shared/",
        training={"maxSteps": 2000},
    )
    apply(control_plane, namespace, credentials_secret("s3", minio.env), changed)
    status = wait_phase(control_plane, "ltj", "second", namespace, "Failed")
    ready = condition(status, "Ready")
    assert ready["reason"] == "OutputInUse"
    assert "training.maxSteps: 1000 -> 2000" in ready["message"]
    assert "set restartPolicy: restart" in ready["message"]
    assert not exists(control_plane, "rayjob", "second", namespace)
    # The same settings under another name: it may finish with the published model.
    same = training_job_manifest("third", storage=storage, output=f"s3://{bucket}/shared/")
    apply(control_plane, namespace, same)
    eventually(lambda: get(control_plane, "rayjob", "third", namespace))
    # Other settings that say to start over there: they may too.
    restarted = training_job_manifest(
        "fourth",
        storage=storage,
        output=f"s3://{bucket}/shared/",
        training={"maxSteps": 2000},
        restartPolicy="restart",
    )
    apply(control_plane, namespace, restarted)
    eventually(lambda: get(control_plane, "rayjob", "fourth", namespace))


def test_progress_and_loss_come_from_minio(
    control_plane: ControlPlane,
    fleet_namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
) -> None:
    namespace = fleet_namespace
    secret = credentials_secret("s3", minio.env)
    job = cpu_job(
        "watched",
        storage={"endpoint": minio.endpoint, "insecure": True, "credentialsSecret": {"name": "s3"}},
        output=f"s3://{bucket}/watched/",
    )
    apply(control_plane, namespace, secret, job)
    eventually(lambda: get(control_plane, "rayjob", "watched", namespace))

    def put(key: str, text: str) -> None:
        data = text.encode()
        minio.client().put_object(bucket, f"watched/{key}", io.BytesIO(data), len(data))

    put(
        "progress.json",
        json.dumps({"step": 250, "total_steps": 1000, "eta_s": 90.0, "updated_at": "t"}),
    )
    put(
        "metrics.jsonl",
        '{"step": 240, "train_loss": 3.5}\n'
        '{"step": 250, "train_loss": 3.25, "tokens_per_second": 812.5}\n'
        '{"step": 250, "kind": "eval", "eval_loss": 3.4, "perplexity": 29.96, "accuracy": 0.31}\n',
    )
    wait_rayjob(control_plane, namespace, "watched", "Running")  # KubeRay's own doing

    def progressed(step: int) -> dict[str, Any]:
        status = status_of(control_plane, "ltj", "watched", namespace)
        assert status.get("progress", {}).get("step") == step, status
        return status

    status = eventually(lambda: progressed(250))
    assert status["progress"]["summary"] == "250/1000 (25%)"
    assert status["progress"]["etaSeconds"] == 90.0
    assert status["metrics"] == {
        "trainLoss": 3.25,
        "tokensPerSecond": 812.5,
        "evalLoss": 3.4,
        "perplexity": 29.96,
        "accuracy": 0.31,
    }
    row = control_plane.kubectl("get", "ltj", "watched", "-n", namespace).stdout.splitlines()[1]
    assert row.split()[1:5] == ["Running", "250/1000", "(25%)", "3.25"]

    put("progress.json", json.dumps({"step": 500, "total_steps": 1000, "updated_at": "t"}))
    assert eventually(lambda: progressed(500))["progress"]["percent"] == 50.0


def test_a_fine_tune_runs_as_a_rayjob_and_shows_its_base_method_and_share(
    control_plane: ControlPlane,
    fleet_namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
) -> None:
    namespace = fleet_namespace
    example = ROOT / "examples" / "finetune" / "lora-job.yaml"
    secret = credentials_secret("minio-credentials", minio.env)
    # The example as written, except that storage is the test's MinIO.
    manifest = yaml.safe_load(example.read_text())
    manifest["spec"]["storage"]["endpoint"] = minio.endpoint
    manifest["spec"]["output"] = f"s3://{bucket}/ft/"
    apply(control_plane, namespace, secret, manifest)
    name = manifest["metadata"]["name"]
    rayjob = eventually(lambda: get(control_plane, "rayjob", name, namespace))
    workers = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert workers["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    run = json.loads(get(control_plane, "configmap", f"{name}-run", namespace)["data"]["run.json"])
    assert run["model"] is None
    assert run["pretrained"]["uri"] == "s3://models/smollm2-135m-instruct/"
    assert (run["pretrained"]["method"], run["pretrained"]["lora"]["rank"]) == ("lora", 16)
    assert run["dataset"]["format"] == "chat"

    def finetune() -> dict[str, Any]:
        found: dict[str, Any] = status_of(control_plane, "ltj", name, namespace)["finetune"]
        return found

    assert eventually(finetune) == {
        "base": "s3://models/smollm2-135m-instruct/",
        "method": "lora",
        "summary": "lora",
    }
    # What the runtime writes once the model is built (llmkube/runtime/training/reporter.py).
    progress = {
        "step": 1,
        "total_steps": 100,
        "updated_at": "t",
        "parameters": 136_357_248,
        "trainable_parameters": 1_843_200,
    }
    data = json.dumps(progress).encode()
    minio.client().put_object(bucket, "ft/progress.json", io.BytesIO(data), len(data))
    wait_rayjob(control_plane, namespace, name, "Running")  # on the fleet's L4 pool

    def counted() -> dict[str, Any]:
        found = finetune()
        assert found.get("trainableParameters") == 1_843_200, found
        return found

    assert eventually(counted)["summary"] == "lora, 1.35% trainable"
    row = control_plane.kubectl("get", "ltj", name, "-n", namespace).stdout.splitlines()[1]
    assert "lora, 1.35% trainable" in row


def test_specs_the_apiserver_accepts_but_llmkube_rejects_end_as_invalid_spec(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    bad_jobs = [
        bad
        for bad in corpus()
        if bad.apiserver_says is None and bad.document["kind"] == "LLMTrainingJob"
    ]
    assert len(bad_jobs) >= 2
    for bad in bad_jobs:
        result = control_plane.kubectl("apply", "-n", namespace, "-f", str(bad.path))
        assert result.returncode == 0, result.stderr
    for bad in bad_jobs:
        name = bad.document["metadata"]["name"]  # type: ignore[index]
        status = wait_phase(control_plane, "ltj", name, namespace, "Failed")
        ready = condition(status, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert bad.llmkube_says in ready["message"], ready["message"]
        assert not exists(control_plane, "rayjob", name, namespace)
        assert not exists(control_plane, "configmap", f"{name}-run", namespace)
        eventually(partial(_reasons, control_plane, namespace, name, {"InvalidSpec"}))
    assert operator.healthy()
    apply(control_plane, namespace, training_job_manifest("still-works"))
    eventually(lambda: get(control_plane, "rayjob", "still-works", namespace))


def test_fixing_an_invalid_spec_starts_the_job(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    apply(
        control_plane,
        namespace,
        # The output inside the dataset: a rule only the operator checks.
        training_job_manifest("fixme", output="s3://datasets/text/fixme/"),
    )
    wait_phase(control_plane, "ltj", "fixme", namespace, "Failed")
    patch(control_plane, "ltj", "fixme", namespace, {"spec": {"output": "s3://models/fixme/"}})
    eventually(lambda: get(control_plane, "rayjob", "fixme", namespace))
    status = wait_phase(control_plane, "ltj", "fixme", namespace, "Pending")
    assert condition(status, "Ready")["observedGeneration"] == 2


def test_a_missing_secret_waits_then_starts(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    job = training_job_manifest("patient", storage={"credentialsSecret": {"name": "late"}})
    apply(control_plane, namespace, job)

    def waiting() -> None:
        status = status_of(control_plane, "ltj", "patient", namespace)
        ready = condition(status, "Ready")
        assert (status["phase"], ready["reason"]) == ("Pending", "MissingSecret")
        assert "Secret late not found" in ready["message"]

    eventually(waiting)
    assert not exists(control_plane, "rayjob", "patient", namespace)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "late"},
        "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"},
    }
    apply(control_plane, namespace, secret)
    eventually(lambda: get(control_plane, "rayjob", "patient", namespace), timeout=45)


def test_a_spec_made_invalid_mid_run_keeps_its_rayjob_followed(
    control_plane: ControlPlane, fleet: Fleet, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    apply(control_plane, namespace, cpu_job("drifting"))
    wait_rayjob(control_plane, namespace, "drifting", "Running")
    wait_phase(control_plane, "ltj", "drifting", namespace, "Running")

    # The output moved inside the dataset: a rule only the operator checks.
    invalid = {"spec": {"output": "s3://datasets/text/drifting/"}}
    patch(control_plane, "ltj", "drifting", namespace, invalid)

    def both_said() -> dict[str, Any]:
        status = status_of(control_plane, "ltj", "drifting", namespace)
        applied = condition(status, "SpecApplied")
        assert (applied["status"], applied["reason"]) == ("False", "InvalidSpec"), applied
        assert "lies inside dataset.source" in applied["message"]
        assert "goes on with the spec it was started with" in applied["message"]
        assert status["phase"] == "Running"
        return status

    eventually(both_said)
    # The RayJob (started from the valid spec) finishes: the status still follows it.
    fleet.end_ray_job(namespace, "drifting", "SUCCEEDED")
    status = wait_phase(control_plane, "ltj", "drifting", namespace, "Succeeded", timeout=90)
    assert status["model"]["uri"] == "s3://models/drifting/model"
    assert condition(status, "SpecApplied")["reason"] == "InvalidSpec"


def test_suspend_passes_through_and_other_changes_are_refused(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    apply(control_plane, namespace, cpu_job("steady"))
    original = eventually(lambda: get(control_plane, "rayjob", "steady", namespace))

    patch(control_plane, "ltj", "steady", namespace, {"spec": {"suspend": True}})

    def suspended() -> None:
        assert get(control_plane, "rayjob", "steady", namespace)["spec"].get("suspend") is True

    eventually(suspended)
    wait_phase(control_plane, "ltj", "steady", namespace, "Suspended", timeout=60)  # by KubeRay

    patch(control_plane, "ltj", "steady", namespace, {"spec": {"training": {"maxSteps": 9999}}})

    def refused() -> None:
        applied = condition(status_of(control_plane, "ltj", "steady", namespace), "SpecApplied")
        assert (applied["status"], applied["reason"]) == ("False", "ImmutableSpec")
        assert "spec.training.maxSteps" in applied["message"]

    eventually(refused)
    after = get(control_plane, "rayjob", "steady", namespace)
    assert after["metadata"]["annotations"] == original["metadata"]["annotations"]
    run = json.loads(get(control_plane, "configmap", "steady-run", namespace)["data"]["run.json"])
    assert run["training"]["maxSteps"] == 1000
    eventually(lambda: _no_clusters(control_plane, namespace), timeout=60)  # KubeRay deleted it


def _no_clusters(cp: ControlPlane, namespace: str) -> None:
    assert listed(cp, "rayclusters", namespace) == []


def test_deleting_a_job_removes_its_children_and_blocks_nothing(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    apply(control_plane, namespace, cpu_job("brief"))
    # Running is when progress polling is active: it must not hold the job with a finalizer.
    wait_rayjob(control_plane, namespace, "brief", "Running")
    wait_phase(control_plane, "ltj", "brief", namespace, "Running")
    metadata = get(control_plane, "ltj", "brief", namespace)["metadata"]
    assert not metadata.get("finalizers")
    assert not any(
        key.startswith(("kopf.", "llmkube.io/")) for key in metadata.get("annotations", {})
    )
    deleted = control_plane.kubectl("delete", "ltj", "brief", "-n", namespace, "--timeout=20s")
    assert deleted.returncode == 0, deleted.stderr

    def gone() -> None:
        assert not exists(control_plane, "rayjob", "brief", namespace)
        assert not exists(control_plane, "configmap", "brief-run", namespace)

    eventually(gone)


def test_operator_exports_its_metrics(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    apply(control_plane, namespace, training_job_manifest("counted"))
    eventually(lambda: get(control_plane, "rayjob", "counted", namespace))

    def exported() -> str:
        text = operator.metrics()
        assert 'llmkube_operator_reconcile_total{kind="LLMTrainingJob",result="success"}' in text
        assert "llmkube_operator_reconcile_duration_seconds_bucket" in text
        assert 'llmkube_trainingjobs{phase="Pending"}' in text
        return text

    eventually(exported)


def test_a_job_with_a_long_name_is_followed_too(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    name = "a-rather-long-experiment-name-" + "x" * 70  # 100 characters: over every label limit
    apply(control_plane, namespace, cpu_job(name))
    rayjob_name = eventually(lambda: wait_phase(control_plane, "ltj", name, namespace, "Pending"))[
        "rayJobName"
    ]
    assert len(rayjob_name) <= 47
    wait_rayjob(control_plane, namespace, rayjob_name, "Running")
    wait_phase(control_plane, "ltj", name, namespace, "Running")
