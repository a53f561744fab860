"""LLMTuningJob against a real apiserver, KubeRay's real controller and the real scheduler (a
fleet namespace). No Ray runs in this tier: the test writes the search's progress.json,
trials.jsonl and published model where the runtime would (llmkube.runtime.tuning.recorder,
.publish), and ends the Ray job as only a live Ray could."""

import io
from pathlib import Path
from typing import Any

from llmkube.api.runconfig import StorageConfig, TuningRunConfig
from llmkube.api.training import PublishedModel
from llmkube.api.tuning import (
    TRIALS_FILE,
    BestTrial,
    TrialCounts,
    TrialRecord,
    TuningProgress,
)
from llmkube.storage import open_store
from llmkube.storage.versions import publish_version
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.fleet import Fleet
from llmkube.testing.manifests import deployment_manifest
from llmkube.testing.minio import MinioServer
from llmkube.testing.operator import OperatorProcess
from tests.cluster.helpers import (
    apply,
    condition,
    credentials_secret,
    events_for,
    eventually,
    get,
    staged_files,
    status_of,
    wait_phase,
    wait_rayjob,
)


def search_manifest(name: str, minio: MinioServer, bucket: str) -> dict[str, Any]:
    return {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTuningJob",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "model": {"preset": "tiny"},
                "tokenizer": {"type": "byte"},
                "dataset": {"source": "s3://datasets/text/"},
                "storage": {
                    "endpoint": minio.endpoint,
                    "insecure": True,
                    "credentialsSecret": {"name": "s3"},
                },
                "training": {"maxSteps": 40},
                "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 1},
                "output": f"s3://{bucket}/{name}/",
            },
            "searchSpace": {
                "training.learningRate": {"type": "loguniform", "min": 1e-4, "max": 1e-2}
            },
            "earlyStopping": {"type": "asha"},
            "trials": {"max": 6, "parallel": 2, "maxFailed": 1},
        },
    }


def write(minio: MinioServer, bucket: str, key: str, text: str) -> None:
    data = text.encode()
    minio.client().put_object(bucket, key, io.BytesIO(data), len(data))


def test_a_search_runs_as_a_rayjob_reports_its_trials_and_its_best_model_is_served(
    control_plane: ControlPlane,
    fleet: Fleet,
    fleet_namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    namespace = fleet_namespace
    search = search_manifest("sweep", minio, bucket)
    served = deployment_manifest(
        "sweep",
        model={"trainingJobRef": {"kind": "LLMTuningJob", "name": "sweep"}},
        storage=search["spec"]["template"]["storage"],
    )
    apply(control_plane, namespace, credentials_secret("s3", minio.env), search, served)

    rayjob = eventually(lambda: get(control_plane, "rayjob", "sweep-tune", namespace))
    job = get(control_plane, "ltune", "sweep", namespace)
    spec = rayjob["spec"]
    assert spec["entrypoint"] == "python -m llmkube.runtime.tune --config /etc/llmkube/tuning.json"
    assert spec["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == 2, "one per trial at once"
    owner = rayjob["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("LLMTuningJob", job["metadata"]["uid"])
    configmap = get(control_plane, "configmap", "sweep-tune-run", namespace)
    config = TuningRunConfig.model_validate_json(configmap["data"]["tuning.json"])
    assert config.output == f"s3://{bucket}/sweep"
    assert config.early_stopping is not None
    assert config.early_stopping.grace_period == 500, "the template's evaluation interval"
    for secret in minio.env.values():
        assert secret not in configmap["data"]["tuning.json"]
    policy = get(control_plane, "networkpolicy", "sweep-tune-tuning", namespace)
    assert policy["spec"]["podSelector"] == {"matchLabels": {"llmkube.io/tuning-job": "sweep"}}

    wait_rayjob(control_plane, namespace, "sweep-tune", "Running")  # KubeRay's own doing
    best = BestTrial(trial="ab-00001", params={"training.learningRate": 0.002}, metric=3.1, step=40)
    records = [
        TrialRecord(trial="ab-00000", state="stopped_early", params={}, step=500, metric=5.2),
        TrialRecord(trial="ab-00001", state="succeeded", params={}, step=40, metric=3.1),
        TrialRecord(trial="ab-00002", state="failed", params={}, error="DataError: no files"),
        TrialRecord(trial="ab-00003", state="running", params={}),
        TrialRecord(trial="ab-00004", state="running", params={}),
    ]
    write(
        minio, bucket, f"sweep/{TRIALS_FILE}", "".join(r.model_dump_json() + "\n" for r in records)
    )
    running = TuningProgress(
        trials=TrialCounts(total=6, running=2, succeeded=1, stopped_early=1, failed=1),
        best_trial=best,
        updated_at="t",
    )
    write(minio, bucket, "sweep/progress.json", running.model_dump_json())

    def searching() -> dict[str, Any]:
        status = status_of(control_plane, "ltune", "sweep", namespace)
        assert status.get("trialsSummary") == "3/6 (2 running)", status
        return status

    status = eventually(searching, timeout=60)
    assert status["phase"] == "Running"
    assert status["bestTrial"]["trial"] == "ab-00001"
    assert "best so far ab-00001 (eval_loss 3.1)" in condition(status, "Ready")["message"]
    row = control_plane.kubectl("get", "ltune", "sweep", "-n", namespace).stdout.splitlines()
    assert row[0].split() == ["NAME", "PHASE", "TRIALS", "BEST", "AGE"]
    assert row[1].split()[:5] == ["sweep", "Running", "3/6", "(2", "running)"]

    def trial_events() -> dict[str, str]:
        found = {
            e["reason"]: e["message"]
            for e in events_for(control_plane, namespace, "sweep", kind="LLMTuningJob")
        }
        assert {"TrialFailed", "TrialStoppedEarly"} <= found.keys(), found
        return found

    events = eventually(trial_events)
    assert "ab-00002: DataError: no files" in events["TrialFailed"]
    assert "ab-00000 at step 500" in events["TrialStoppedEarly"]
    waiting = condition(status_of(control_plane, "llmd", "sweep", namespace), "Ready")
    assert "waiting for LLMTuningJob sweep to succeed" in waiting["message"]

    # The search ends: the best trial's model is published at the search's output.
    store = open_store(
        config.output, StorageConfig(endpoint=minio.endpoint, insecure=True), environ=minio.env
    )
    staged = staged_files(tmp_path / "best", {"model.safetensors": b"w", "config.json": b"{}"})
    pointer = publish_version(store, config.output, staged, run="r", provenance=b"{}")
    done = running.model_copy(
        update={
            "trials": TrialCounts(total=6, succeeded=3, stopped_early=2, failed=1),
            "finished": True,
            "model": PublishedModel(uri=f"{config.output}/model", version=pointer.version),
        }
    )
    write(minio, bucket, "sweep/progress.json", done.model_dump_json())
    fleet.end_ray_job(namespace, "sweep-tune", "SUCCEEDED")
    status = wait_phase(control_plane, "ltune", "sweep", namespace, "Succeeded", timeout=90)
    assert status["model"] == {"uri": f"s3://{bucket}/sweep/model", "version": pointer.version}
    assert status["trialsSummary"] == "6/6"
    assert condition(status, "Complete")["status"] == "True"

    def serving_the_best() -> dict[str, Any]:
        rayservice = get(control_plane, "rayservice", "sweep", namespace)
        assert pointer.version in rayservice["spec"]["serveConfigV2"], rayservice["spec"]
        return rayservice

    eventually(serving_the_best, timeout=60)


def test_a_search_space_the_template_refuses_ends_as_invalid_spec(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
) -> None:
    search = search_manifest("bad", minio, bucket)
    search["spec"]["searchSpace"] = {"training.learnRate": {"type": "uniform", "min": 0, "max": 1}}
    apply(control_plane, namespace, credentials_secret("s3", minio.env), search)
    status = wait_phase(control_plane, "ltune", "bad", namespace, "Failed")
    ready = condition(status, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "'learnRate' is not a field of training" in ready["message"]
    assert ready["observedGeneration"] == 1
