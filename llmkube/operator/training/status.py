"""Pure status mapping for LLMTrainingJob: RayJob state + progress files -> the user's status."""

from dataclasses import dataclass
from typing import Any

from llmkube.api import LLMTrainingJob, LLMTrainingJobStatus
from llmkube.api.artifacts import MODEL_DIR, ModelPointer, ProgressRecord
from llmkube.api.training import (
    CheckpointStatus,
    FinetuneStatus,
    PublishedModel,
    TrainingMetrics,
    TrainingPhase,
    TrainingProgress,
)
from llmkube.operator.conditions import ConditionStatus, find, set_condition, spec_applied
from llmkube.operator.kueue import queued_message
from llmkube.operator.naming import APPLIED_SPEC_ANNOTATION


@dataclass(frozen=True)
class PhaseVerdict:
    phase: TrainingPhase
    reason: str
    message: str


@dataclass(frozen=True)
class ProgressSnapshot:
    """What the runtime last wrote under the job's output."""

    progress: ProgressRecord | None
    metrics: TrainingMetrics | None
    published: ModelPointer | None = None
    """What the output's model/ points at."""


FOLLOWED_RAYJOB_STATUS = (
    "jobDeploymentStatus",
    "jobStatus",
    "message",
    "reason",
    "failed",
    "startTime",
    "endTime",
    "rayClusterName",
)
"""The RayJob status fields a job's status is derived from. KubeRay rewrites the rest (its
cluster's resources, conditions, endpoints) many times while a cluster starts."""


def followed_state(rayjob: dict[str, Any]) -> tuple[object, ...]:
    """What of a RayJob the job's status depends on: an event that leaves it unchanged changes
    nothing the operator would write."""
    status = rayjob.get("status") or {}
    annotations = rayjob.get("metadata", {}).get("annotations") or {}
    return (
        *(status.get(key) for key in FOLLOWED_RAYJOB_STATUS),
        (rayjob.get("spec") or {}).get("suspend"),
        annotations.get(APPLIED_SPEC_ANNOTATION),
    )


def verdict_from_rayjob(rayjob_name: str, rayjob_status: dict[str, Any] | None) -> PhaseVerdict:
    """Map KubeRay's jobDeploymentStatus / jobStatus (v1.5 values) to a phase and a reason."""
    status = rayjob_status or {}
    deployment = status.get("jobDeploymentStatus", "")
    job_status = status.get("jobStatus", "")
    kuberay_message = status.get("message") or ""
    failures = int(status.get("failed") or 0)
    if deployment in ("", "New", "Initializing", "Waiting"):
        return PhaseVerdict(
            "Pending", "Initializing", f"RayJob {rayjob_name}: the Ray cluster is starting"
        )
    if deployment == "Running":
        return PhaseVerdict("Running", "Running", "training")
    if deployment == "Retrying":
        return PhaseVerdict(
            "Running",
            "Retrying",
            f"attempt {failures} failed; KubeRay is retrying, resuming from the last checkpoint",
        )
    if deployment == "Complete" and job_status == "SUCCEEDED":
        return PhaseVerdict("Succeeded", "Succeeded", "training finished; the model is published")
    if deployment == "Complete":
        return PhaseVerdict(
            "Failed", "JobStopped", f"the Ray job ended as {job_status or 'unknown'}"
        )
    if deployment == "ValidationFailed":
        return PhaseVerdict(
            "Failed",
            "RayJobRejected",
            f"KubeRay rejected RayJob {rayjob_name}: {kuberay_message} (an operator/KubeRay "
            "version mismatch; report it)",
        )
    if deployment == "Failed":
        reason = status.get("reason") or "Failed"
        hint = {
            "DeadlineExceeded": "the job ran past spec.activeDeadlineSeconds",
            "AppFailed": "the training process failed; see the RayJob's submitter logs",
            "SubmissionFailed": "the job could not be submitted to the Ray cluster",
        }.get(reason, "see the RayJob's events")
        detail = f": {kuberay_message}" if kuberay_message else ""
        return PhaseVerdict("Failed", reason, f"{hint}{detail}")
    if deployment in ("Suspending", "Suspended"):
        return PhaseVerdict(
            "Suspended",
            "Suspended",
            "suspended; set spec.suspend: false to resume from the last checkpoint",
        )
    return PhaseVerdict("Pending", "Unknown", f"RayJob {rayjob_name} is {deployment}")


def _readiness(phase: TrainingPhase) -> ConditionStatus:
    return "False" if phase == "Failed" else "True"


def _progress(record: ProgressRecord) -> TrainingProgress:
    percent = round(100.0 * record.step / record.total_steps, 1) if record.total_steps else None
    summary = f"{record.step}/{record.total_steps}" + (
        f" ({percent:g}%)" if percent is not None else ""
    )
    return TrainingProgress(
        step=record.step,
        total_steps=record.total_steps,
        percent=percent,
        eta_seconds=record.eta_s,
        summary=summary,
    )


def finetune_status(job: LLMTrainingJob, progress: ProgressRecord | None) -> FinetuneStatus | None:
    """Base, method and parameter counts of a fine-tune; None training from scratch."""
    pretrained, finetune = job.spec.model.pretrained, job.spec.resolved_finetune()
    if pretrained is None or finetune is None:
        return None
    parameters = progress.parameters if progress else None
    trainable = progress.trainable_parameters if progress else None
    summary: str = finetune.method
    if parameters and trainable is not None:
        summary += f", {100 * trainable / parameters:.2f}% trainable"
    return FinetuneStatus(
        base=pretrained.uri,
        method=finetune.method,
        parameters=parameters,
        trainable_parameters=trainable,
        summary=summary,
    )


def training_status(
    current: LLMTrainingJobStatus,
    job: LLMTrainingJob,
    *,
    rayjob_name: str,
    rayjob_status: dict[str, Any] | None,
    snapshot: ProgressSnapshot | None,
    ignored_spec_changes: list[str],
    now: str,
    invalid_spec: str | None = None,
    unschedulable: str | None = None,
) -> LLMTrainingJobStatus:
    """The status of a job whose RayJob exists. `snapshot` None keeps the progress last read.
    `invalid_spec` says why the stored spec no longer validates (`job` is then the spec the
    RayJob was built from, which it keeps running with)."""
    generation = job.metadata.generation
    verdict = verdict_from_rayjob(rayjob_name, rayjob_status)
    if verdict.phase == "Suspended" and job.spec.scheduling.queue_name is not None:
        # Only Kueue suspends a queued job (spec.suspend is refused with a queue).
        was_ready = find(current.conditions, "Ready")
        ran_before = current.phase == "Running" or (
            was_ready is not None and was_ready.reason == "Preempted"
        )
        reason, message = queued_message(job.spec.scheduling, ran_before)
        verdict = PhaseVerdict("Queued", reason, message)
    if verdict.phase == "Pending" and unschedulable is not None:
        verdict = PhaseVerdict("Pending", "Unschedulable", unschedulable)
    status = current.model_copy(deep=True)
    status.waiting_for = unschedulable if verdict.phase == "Pending" else None
    status.phase = verdict.phase
    status.observed_generation = generation
    status.ray_job_name = rayjob_name
    status.retries = int((rayjob_status or {}).get("failed") or 0)
    status.message = verdict.message
    status.start_time = (rayjob_status or {}).get("startTime") or status.start_time
    if verdict.phase in ("Succeeded", "Failed"):
        status.completion_time = (
            (rayjob_status or {}).get("endTime") or status.completion_time or now
        )
    if verdict.phase == "Succeeded":
        pointer = snapshot.published if snapshot is not None else None
        known = status.model.version if status.model is not None else None
        status.model = PublishedModel(
            uri=f"{job.spec.output.rstrip('/')}/{MODEL_DIR}",
            version=pointer.version if pointer is not None else known,
        )

    reported = snapshot.progress if snapshot is not None else None
    if reported is not None or status.finetune is None:
        status.finetune = finetune_status(job, reported)
    if snapshot is not None:
        if snapshot.progress is not None:
            status.progress = _progress(snapshot.progress)
            if snapshot.progress.checkpoint_uri and snapshot.progress.checkpoint_step is not None:
                status.checkpoint = CheckpointStatus(
                    uri=snapshot.progress.checkpoint_uri, step=snapshot.progress.checkpoint_step
                )
        if snapshot.metrics is not None:
            status.metrics = snapshot.metrics

    conditions = set_condition(
        status.conditions,
        type="Ready",
        status=_readiness(verdict.phase),
        reason=verdict.reason,
        message=verdict.message,
        generation=generation,
        now=now,
    )
    conditions = set_condition(
        conditions,
        type="Complete",
        status="True" if verdict.phase == "Succeeded" else "False",
        reason=verdict.reason,
        message=verdict.message,
        generation=generation,
        now=now,
    )
    if invalid_spec is not None:
        status.message = f"{verdict.message}; the spec is now invalid (see SpecApplied)"
        conditions = set_condition(
            conditions,
            type="SpecApplied",
            status="False",
            reason="InvalidSpec",
            message=(
                f"{invalid_spec}. The RayJob goes on with the spec it was started with, and this "
                "status keeps following it; fix the spec, or delete the job to stop it."
            ),
            generation=generation,
            now=now,
        )
    else:
        conditions = spec_applied(
            conditions,
            ignored_spec_changes,
            unchangeable=(
                "a training job's spec cannot change once its Ray cluster exists (only "
                "spec.suspend can). Create a new LLMTrainingJob to train with new settings."
            ),
            generation=generation,
            now=now,
        )
    status.conditions = conditions
    return status
