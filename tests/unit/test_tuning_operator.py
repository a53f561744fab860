"""What the operator builds for an LLMTuningJob and how it reports one: pure builders and status
mapping, table-tested."""

import json
from typing import Any

import pytest

from llmkube.api import LLMTuningJob, LLMTuningJobStatus
from llmkube.api.runconfig import TuningRunConfig, tuning_run_config
from llmkube.api.training import PublishedModel
from llmkube.api.tuning import BestTrial, TrialCounts, TrialRecord, TuningProgress
from llmkube.operator.naming import tuning_configmap_name, tuning_rayjob_name
from llmkube.operator.tuning.builders import build_tuning_configmap, build_tuning_rayjob
from llmkube.operator.tuning.status import trial_events, trials_summary, tuning_status

NOW = "2026-11-30T17:00:00Z"


def search(**spec: Any) -> LLMTuningJob:
    return LLMTuningJob.model_validate(
        {
            "metadata": {"name": "sweep", "namespace": "team", "uid": "u-1", "generation": 2},
            "spec": {
                "template": {
                    "model": {"preset": "tiny"},
                    "tokenizer": {"type": "byte"},
                    "dataset": {"source": "s3://data/corpus/"},
                    "storage": {"credentialsSecret": {"name": "minio"}},
                    "training": {"maxSteps": 40},
                    "resources": {"workers": 2, "gpusPerWorker": 1, "cpusPerWorker": 4},
                    "output": "s3://runs/sweep/",
                },
                "searchSpace": {
                    "training.learningRate": {"type": "loguniform", "min": 1e-4, "max": 1e-2}
                },
                "trials": {"max": 8, "parallel": 3},
                **spec,
            },
        }
    )


def test_the_rayjob_runs_the_search_with_a_worker_group_per_parallel_trial() -> None:
    rayjob = build_tuning_rayjob(search(), default_image="llmkube-runtime:1")
    assert rayjob["metadata"]["name"] == tuning_rayjob_name("sweep") == "sweep-tune"
    assert rayjob["metadata"]["ownerReferences"][0]["kind"] == "LLMTuningJob"
    assert rayjob["metadata"]["labels"]["llmkube.io/tuning-job"] == "sweep"
    assert rayjob["metadata"]["labels"]["app.kubernetes.io/component"] == "tuning"
    spec = rayjob["spec"]
    assert spec["entrypoint"] == "python -m llmkube.runtime.tune --config /etc/llmkube/tuning.json"
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert (workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == (6, 6, 6)
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "minio"
    volume = workers["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == tuning_configmap_name("sweep")
    assert spec["suspend"] is False
    applied = json.loads(rayjob["metadata"]["annotations"]["llmkube.io/applied-spec"])
    assert applied["trials"]["parallel"] == 3


def test_a_queued_search_is_created_suspended_for_kueue() -> None:
    job = search()
    job.spec.template.scheduling.queue_name = "team-queue"
    rayjob = build_tuning_rayjob(job, default_image="img")
    assert rayjob["spec"]["suspend"] is True
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"


def test_the_configmap_holds_the_searchs_run_config() -> None:
    job = search()
    config = tuning_run_config(job, default_endpoint="minio.storage:9000")
    configmap = build_tuning_configmap(job, config)
    loaded = TuningRunConfig.model_validate_json(configmap["data"]["tuning.json"])
    assert loaded == config
    assert loaded.storage.endpoint == "minio.storage:9000"


def rayjob_status(deployment: str, job_status: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "jobDeploymentStatus": deployment,
        "jobStatus": job_status,
        "startTime": "2026-11-30T16:00:00Z",
        **extra,
    }


BEST = BestTrial(trial="ab-00002", params={"training.learningRate": 0.003}, metric=3.1, step=40)


@pytest.mark.parametrize(
    ("deployment", "job_status", "progress", "phase", "reason", "message"),
    [
        ("Initializing", "", None, "Pending", "Initializing", "the Ray cluster is starting"),
        (
            "Running",
            "RUNNING",
            TuningProgress(
                trials=TrialCounts(total=6, running=2, succeeded=1, stopped_early=2),
                best_trial=BEST,
                updated_at=NOW,
            ),
            "Running",
            "Searching",
            "searching: 3/6 (2 running) trials ended; best so far ab-00002 (eval_loss 3.1)",
        ),
        ("Retrying", "", None, "Running", "Retrying", "without running finished trials again"),
        (
            "Complete",
            "SUCCEEDED",
            TuningProgress(
                trials=TrialCounts(total=6, succeeded=2, stopped_early=4),
                best_trial=BEST,
                updated_at=NOW,
                finished=True,
                model=PublishedModel(uri="s3://runs/sweep/model", version="v1"),
            ),
            "Succeeded",
            "Succeeded",
            "best trial ab-00002 (eval_loss 3.1), published to s3://runs/sweep/model",
        ),
        (
            "Failed",
            "FAILED",
            TuningProgress(
                trials=TrialCounts(total=6, succeeded=1, failed=2),
                updated_at=NOW,
                finished=True,
                failure="2 trial(s) failed, more than trials.maxFailed (1)",
            ),
            "Failed",
            "TrialsFailed",
            "2 trial(s) failed, more than trials.maxFailed (1)",
        ),
        ("Failed", "FAILED", None, "Failed", "SearchFailed", "see the RayJob's submitter logs"),
    ],
)
def test_status_follows_the_rayjob_and_the_searchs_progress(
    deployment: str,
    job_status: str,
    progress: TuningProgress | None,
    phase: str,
    reason: str,
    message: str,
) -> None:
    status = tuning_status(
        LLMTuningJobStatus(),
        search(),
        rayjob_name="sweep-tune",
        rayjob_status=rayjob_status(deployment, job_status, reason="AppFailed"),
        progress=progress,
        ignored_spec_changes=[],
        now=NOW,
    )
    assert status.phase == phase
    assert message in (status.message or "")
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (ready.reason, ready.observed_generation) == (reason, 2)
    assert ready.status == ("False" if phase == "Failed" else "True")
    if progress is not None:
        assert status.trials == progress.trials
        assert status.trials_summary == trials_summary(progress.trials)
    if phase == "Succeeded":
        assert status.model == PublishedModel(uri="s3://runs/sweep/model", version="v1")
        assert status.best_trial == BEST
        assert status.completion_time == NOW


def test_a_status_read_without_progress_keeps_the_last_counts() -> None:
    before = LLMTuningJobStatus(trials=TrialCounts(total=6, succeeded=2), best_trial=BEST)
    status = tuning_status(
        before,
        search(),
        rayjob_name="sweep-tune",
        rayjob_status=rayjob_status("Running", "RUNNING"),
        progress=None,
        ignored_spec_changes=["spec.trials.max"],
        now=NOW,
    )
    assert status.trials == before.trials
    assert status.best_trial == BEST
    applied = next(c for c in status.conditions if c.type == "SpecApplied")
    assert (applied.status, applied.reason) == ("False", "ImmutableSpec")
    assert "spec.trials.max" in applied.message


def test_events_name_the_trials_that_failed_or_stopped_early() -> None:
    records = [
        TrialRecord(trial="a", state="succeeded", params={}, step=40, metric=3.0),
        TrialRecord(trial="b", state="failed", params={}, error="DataError: no files at s3://x"),
        TrialRecord(trial="c", state="stopped_early", params={}, step=10, metric=5.2),
    ]
    events = trial_events(
        TrialCounts(total=3, succeeded=1),
        TrialCounts(total=3, succeeded=1, failed=1, stopped_early=1),
        records,
        "eval_loss",
    )
    assert events == [
        ("Warning", "TrialFailed", "1 trial(s) failed so far: b: DataError: no files at s3://x"),
        (
            "Normal",
            "TrialStoppedEarly",
            "1 trial(s) stopped early so far: c at step 10 (eval_loss 5.2)",
        ),
    ]
    assert trial_events(TrialCounts(failed=1), TrialCounts(failed=1), records, "eval_loss") == []
