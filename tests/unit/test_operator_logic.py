"""Table tests of the operator's pure logic: status mapping, patches, conditions, settings."""

from typing import Any

import pytest

from llmkube.api import LLMTrainingJob, LLMTrainingJobStatus
from llmkube.api.artifacts import ProgressRecord
from llmkube.api.common import Scheduling
from llmkube.operator.blocked import blocked_status
from llmkube.operator.conditions import find, set_condition
from llmkube.operator.patches import changed_paths, merge_patch
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.training.progress import complete_lines, latest_metrics
from llmkube.operator.training.status import (
    ProgressSnapshot,
    followed_state,
    training_status,
    verdict_from_rayjob,
)

JOB = LLMTrainingJob.model_validate(
    {
        "metadata": {"name": "j", "namespace": "ml", "generation": 3},
        "spec": {
            "dataset": {"source": "s3://data/x/"},
            "training": {"maxSteps": 100},
            "output": "s3://models/j/",
        },
    }
)


@pytest.mark.parametrize(
    ("rayjob_status", "phase", "reason"),
    [
        (None, "Pending", "Initializing"),
        ({"jobDeploymentStatus": "Initializing"}, "Pending", "Initializing"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, "Running", "Running"),
        ({"jobDeploymentStatus": "Retrying", "failed": 1}, "Running", "Retrying"),
        (
            {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"},
            "Succeeded",
            "Succeeded",
        ),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, "Failed", "JobStopped"),
        ({"jobDeploymentStatus": "Failed", "reason": "AppFailed"}, "Failed", "AppFailed"),
        (
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"},
            "Failed",
            "DeadlineExceeded",
        ),
        ({"jobDeploymentStatus": "ValidationFailed"}, "Failed", "RayJobRejected"),
        ({"jobDeploymentStatus": "Suspending"}, "Suspended", "Suspended"),
        ({"jobDeploymentStatus": "Suspended"}, "Suspended", "Suspended"),
    ],
)
def test_rayjob_states_map_to_phases(
    rayjob_status: dict[str, Any] | None, phase: str, reason: str
) -> None:
    verdict = verdict_from_rayjob("j", rayjob_status)
    assert (verdict.phase, verdict.reason) == (phase, reason)
    assert verdict.message


def status_for(rayjob_status: dict[str, Any] | None, **kwargs: Any) -> LLMTrainingJobStatus:
    return training_status(
        kwargs.pop("current", LLMTrainingJobStatus()),
        JOB,
        rayjob_name="j",
        rayjob_status=rayjob_status,
        snapshot=kwargs.pop("snapshot", None),
        ignored_spec_changes=kwargs.pop("ignored", []),
        now=kwargs.pop("now", "2026-01-01T00:00:00Z"),
    )


def test_success_publishes_the_model_and_completion_time() -> None:
    status = status_for(
        {
            "jobDeploymentStatus": "Complete",
            "jobStatus": "SUCCEEDED",
            "startTime": "2026-01-01T00:00:00Z",
            "endTime": "2026-01-01T01:00:00Z",
        }
    )
    assert status.model is not None
    assert status.model.uri == "s3://models/j/model"
    assert (status.start_time, status.completion_time) == (
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00Z",
    )
    complete = find(status.conditions, "Complete")
    assert complete is not None
    assert (complete.status, complete.observed_generation) == ("True", 3)


def test_failures_count_as_retries_and_unready() -> None:
    status = status_for({"jobDeploymentStatus": "Failed", "reason": "AppFailed", "failed": 2})
    assert status.retries == 2
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "AppFailed")


def test_progress_and_metrics_come_from_the_snapshot() -> None:
    snapshot = ProgressSnapshot(
        progress=ProgressRecord(
            step=25,
            total_steps=100,
            eta_s=30.0,
            updated_at="x",
            checkpoint_uri="s3://models/j/checkpoints/step-000020",
            checkpoint_step=20,
        ),
        metrics=latest_metrics('{"step": 25, "train_loss": 2.5, "tokens_per_second": 900}'),
    )
    status = status_for({"jobDeploymentStatus": "Running"}, snapshot=snapshot)
    assert status.progress is not None
    assert (status.progress.step, status.progress.percent, status.progress.summary) == (
        25,
        25.0,
        "25/100 (25%)",
    )
    assert status.metrics is not None
    assert status.metrics.train_loss == 2.5
    assert status.checkpoint is not None
    assert status.checkpoint.step == 20
    kept = status_for({"jobDeploymentStatus": "Running"}, current=status, snapshot=None)
    assert kept.progress == status.progress, "no snapshot keeps the last progress read"


FINETUNE = LLMTrainingJob.model_validate(
    {
        "metadata": {"name": "ft", "namespace": "ml", "generation": 1},
        "spec": {
            "model": {"pretrained": {"uri": "s3://models/smollm2/"}},
            "dataset": {"source": "s3://data/chat/", "format": "chat"},
            "training": {"maxSteps": 100},
            "output": "s3://models/ft/",
        },
    }
)


@pytest.mark.parametrize(
    ("job", "progress", "expected"),
    [
        (JOB, None, None),
        (FINETUNE, None, ("s3://models/smollm2/", "lora", None, "lora")),
        (
            FINETUNE,
            ProgressRecord(
                step=1,
                total_steps=100,
                updated_at="x",
                parameters=135_436_608,
                trainable_parameters=921_600,
            ),
            ("s3://models/smollm2/", "lora", 921_600, "lora, 0.68% trainable"),
        ),
    ],
)
def test_a_fine_tune_shows_its_base_method_and_trainable_share(
    job: LLMTrainingJob, progress: ProgressRecord | None, expected: tuple[Any, ...] | None
) -> None:
    status = training_status(
        LLMTrainingJobStatus(),
        job,
        rayjob_name="ft",
        rayjob_status={"jobDeploymentStatus": "Running"},
        snapshot=ProgressSnapshot(progress=progress, metrics=None),
        ignored_spec_changes=[],
        now="2026-01-01T00:00:00Z",
    )
    finetune = status.finetune
    found = (
        None
        if finetune is None
        else (finetune.base, finetune.method, finetune.trainable_parameters, finetune.summary)
    )
    assert found == expected


def test_ignored_spec_changes_are_named() -> None:
    status = status_for({"jobDeploymentStatus": "Running"}, ignored=["spec.training.maxSteps"])
    applied = find(status.conditions, "SpecApplied")
    assert applied is not None
    assert applied.reason == "ImmutableSpec"
    assert "spec.training.maxSteps" in applied.message


def test_transition_time_changes_only_with_the_status() -> None:
    first = status_for({"jobDeploymentStatus": "Running"}, now="T1")
    same = status_for({"jobDeploymentStatus": "Running"}, current=first, now="T2")
    assert same == first, "an unchanged status is identical, so nothing is written"
    failed = status_for({"jobDeploymentStatus": "Failed"}, current=first, now="T3")
    ready = find(failed.conditions, "Ready")
    assert ready is not None
    assert ready.last_transition_time == "T3"


def test_blocked_status() -> None:
    status = blocked_status(
        LLMTrainingJobStatus(),
        phase="Failed",
        reason="InvalidSpec",
        message="spec.x: bad",
        generation=2,
        now="T",
    )
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert (status.phase, ready.reason, ready.observed_generation) == ("Failed", "InvalidSpec", 2)


@pytest.mark.parametrize(
    ("current", "desired", "patch"),
    [
        ({}, {}, {}),
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1}, {"a": 2}, {"a": 2}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": 1, "y": 3}}, {"a": {"y": 3}}),
        ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),
        ({}, {"n": {"deep": True}}, {"n": {"deep": True}}),
    ],
)
def test_merge_patch(current: Any, desired: Any, patch: Any) -> None:
    assert merge_patch(current, desired) == patch


def test_changed_paths() -> None:
    before = {"training": {"maxSteps": 1, "seed": 2}, "output": "a"}
    after = {"training": {"maxSteps": 5, "seed": 2}, "output": "a", "image": "x"}
    assert changed_paths(before, after) == ["image", "training.maxSteps"]


def test_set_condition_replaces_by_type() -> None:
    conditions = set_condition(
        [], type="Ready", status="True", reason="A", message="", generation=1, now="T1"
    )
    conditions = set_condition(
        conditions, type="Ready", status="True", reason="B", message="m", generation=2, now="T2"
    )
    assert len(conditions) == 1
    assert (conditions[0].reason, conditions[0].last_transition_time) == ("B", "T1")


def test_settings_from_environment() -> None:
    settings = OperatorSettings.from_env(
        {
            "LLMKUBE_RUNTIME_IMAGE": "rt:1",
            "LLMKUBE_NAMESPACES": "a, b,",
            "LLMKUBE_METRICS_PORT": "9100",
            "LLMKUBE_S3_ENDPOINT": "",
        }
    )
    assert settings.runtime_image == "rt:1"
    assert settings.namespaces == ["a", "b"]
    assert settings.metrics_port == 9100
    assert settings.s3_endpoint is None
    assert OperatorSettings.from_env({}).namespaces == []


def test_latest_metrics_skips_bad_lines() -> None:
    lines = "\n".join(
        [
            '{"step": 1, "train_loss": 5.0}',
            "not json",
            '{"step": 2, "kind": "eval", "eval_loss": 4.0, "perplexity": 54.6, "accuracy": 0.2}',
            '{"step": 3, "train_loss": 3.0, "tokens_per_second": 1000}',
            '{"no_step": true}',
            '{"step": 2, "kind": "resume"}',
        ]
    )
    metrics = latest_metrics(lines)
    assert metrics is not None
    assert (metrics.train_loss, metrics.eval_loss, metrics.tokens_per_second) == (3.0, 4.0, 1000)
    assert latest_metrics("") is None


def test_the_tail_of_a_long_metrics_file_gives_the_latest_numbers() -> None:
    lines = [f'{{"step": {step}, "train_loss": {10 - step / 10000}}}' for step in range(20000)]
    text = ("\n".join(lines) + "\n").encode()
    tail = text[-4096:]  # starts in the middle of a line
    metrics = latest_metrics(complete_lines(tail, truncated=True))
    assert metrics is not None
    assert metrics.train_loss == pytest.approx(10 - 19999 / 10000)
    assert complete_lines(b'{"step": 1}\n', truncated=False) == '{"step": 1}\n'
    assert complete_lines(b"no newline at all", truncated=True) == ""


QUEUED_JOB = JOB.model_copy(
    update={"spec": JOB.spec.model_copy(update={"scheduling": Scheduling(queue_name="team-a")})}
)


@pytest.mark.parametrize(
    ("current", "reason", "says"),
    [
        (LLMTrainingJobStatus(), "Queued", "waiting in LocalQueue team-a for Kueue to admit it"),
        # It ran before: Kueue preempted it; its checkpoints are where it resumes.
        (
            LLMTrainingJobStatus(phase="Running"),
            "Preempted",
            "Kueue suspended it to make room for other work",
        ),
    ],
)
def test_a_queued_job_that_kueue_holds_is_queued_or_preempted(
    current: LLMTrainingJobStatus, reason: str, says: str
) -> None:
    status = training_status(
        current,
        QUEUED_JOB,
        rayjob_name="j",
        rayjob_status={"jobDeploymentStatus": "Suspended"},
        snapshot=None,
        ignored_spec_changes=[],
        now="2026-01-01T01:00:00Z",
    )
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert (status.phase, ready.status, ready.reason) == ("Queued", "True", reason)
    assert says in ready.message
    # Without a queue, only the user suspends: that stays Suspended.
    assert status_for({"jobDeploymentStatus": "Suspended"}).phase == "Suspended"


def test_only_what_the_status_shows_makes_a_rayjob_event_count() -> None:
    starting = {"status": {"jobDeploymentStatus": "Initializing", "rayClusterName": "c"}}
    more_resources = {
        "status": {**starting["status"], "rayClusterStatus": {"desiredCPU": "6", "state": ""}}
    }
    running = {"status": {**starting["status"], "jobDeploymentStatus": "Running"}}
    suspended = {**starting, "spec": {"suspend": True}}
    assert followed_state(more_resources) == followed_state(starting)
    assert followed_state(running) != followed_state(starting)
    assert followed_state(suspended) != followed_state(starting)
