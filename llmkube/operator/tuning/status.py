"""Pure status mapping for LLMTuningJob: RayJob state + the search's progress.json -> status."""

from typing import Any

from llmkube.api import LLMTuningJob, LLMTuningJobStatus
from llmkube.api.artifacts import MODEL_DIR
from llmkube.api.training import PublishedModel
from llmkube.api.tuning import TrialCounts, TrialRecord, TuningPhase, TuningProgress
from llmkube.operator.conditions import set_condition, spec_applied
from llmkube.operator.kueue import queued_message
from llmkube.operator.training.status import PhaseVerdict, verdict_from_rayjob

MAX_NAMED_TRIALS = 5


def trials_summary(counts: TrialCounts) -> str:
    ended = counts.succeeded + counts.stopped_early + counts.failed
    running = f" ({counts.running} running)" if counts.running else ""
    return f"{ended}/{counts.total}{running}"


def _verdict(
    job: LLMTuningJob, rayjob_name: str, rayjob_status: dict[str, Any] | None
) -> tuple[TuningPhase, str, str]:
    """The training job's reading of the RayJob, in a search's words."""
    verdict: PhaseVerdict = verdict_from_rayjob(rayjob_name, rayjob_status)
    if verdict.phase in ("Suspended", "Queued"):
        reason, message = queued_message(job.spec.template.scheduling, ran_before=False)
        return "Pending", reason, message
    if verdict.reason == "Running":
        return "Running", "Searching", "searching"
    if verdict.reason == "Retrying":
        return (
            "Running",
            "Retrying",
            "the search's driver failed; KubeRay is retrying it, and it resumes the search "
            "without running finished trials again",
        )
    if verdict.phase == "Succeeded":
        return "Succeeded", "Succeeded", "the search finished"
    if verdict.reason == "AppFailed":
        return "Failed", "SearchFailed", "the search failed; see the RayJob's submitter logs"
    phase: TuningPhase = "Failed" if verdict.phase == "Failed" else "Pending"
    return phase, verdict.reason, verdict.message


def tuning_status(
    current: LLMTuningJobStatus,
    job: LLMTuningJob,
    *,
    rayjob_name: str,
    rayjob_status: dict[str, Any] | None,
    progress: TuningProgress | None,
    ignored_spec_changes: list[str],
    now: str,
) -> LLMTuningJobStatus:
    """The status of a search whose RayJob exists. `progress` None keeps what was last read."""
    generation = job.metadata.generation
    phase, reason, message = _verdict(job, rayjob_name, rayjob_status)
    status = current.model_copy(deep=True)
    status.observed_generation = generation
    status.ray_job_name = rayjob_name
    status.start_time = (rayjob_status or {}).get("startTime") or status.start_time
    if progress is not None:
        status.trials = progress.trials
        status.best_trial = progress.best_trial
        if progress.failure is not None and phase == "Failed":
            reason, message = "TrialsFailed", progress.failure
    status.trials_summary = trials_summary(status.trials)
    best = status.best_trial
    if reason == "Searching":
        message = f"searching: {status.trials_summary} trials ended" + (
            f"; best so far {best.trial} ({job.spec.objective.metric} {best.metric:.4g})"
            if best is not None
            else ""
        )
    if phase in ("Succeeded", "Failed"):
        status.completion_time = (
            (rayjob_status or {}).get("endTime") or status.completion_time or now
        )
    if phase == "Succeeded":
        published = progress.model if progress is not None else status.model
        status.model = published or PublishedModel(
            uri=f"{job.spec.template.output.rstrip('/')}/{MODEL_DIR}"
        )
        if best is not None:
            message = (
                f"the search finished: best trial {best.trial} "
                f"({job.spec.objective.metric} {best.metric:.4g})"
                + (f", published to {status.model.uri}" if job.spec.publish == "best" else "")
            )
    status.phase = phase
    status.message = message
    conditions = set_condition(
        status.conditions,
        type="Ready",
        status="False" if phase == "Failed" else "True",
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    conditions = set_condition(
        conditions,
        type="Complete",
        status="True" if phase == "Succeeded" else "False",
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    conditions = spec_applied(
        conditions,
        ignored_spec_changes,
        unchangeable=(
            "a search's spec cannot change once its Ray cluster exists. Create a new "
            "LLMTuningJob to search with new settings."
        ),
        generation=generation,
        now=now,
    )
    status.conditions = conditions
    return status


def trial_events(
    before: TrialCounts, after: TrialCounts, records: list[TrialRecord], metric: str
) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events for trials that failed or were stopped early since
    `before`: one per state that grew, naming the trials in it."""
    events = []
    if after.failed > before.failed:
        failed = [r for r in records if r.state == "failed"][-MAX_NAMED_TRIALS:]
        events.append(
            (
                "Warning",
                "TrialFailed",
                f"{after.failed} trial(s) failed so far: "
                + "; ".join(f"{r.trial}: {r.error}" for r in failed),
            )
        )
    if after.stopped_early > before.stopped_early:
        stopped = [r for r in records if r.state == "stopped_early"][-MAX_NAMED_TRIALS:]
        events.append(
            (
                "Normal",
                "TrialStoppedEarly",
                f"{after.stopped_early} trial(s) stopped early so far: "
                + ", ".join(f"{r.trial} at step {r.step} ({metric} {r.metric})" for r in stopped),
            )
        )
    return events
