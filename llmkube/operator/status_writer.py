"""The one place that writes status (every kind): only on change, with an Event per phase."""

from typing import Any

from pydantic import ValidationError

from llmkube.api import LLMDeploymentStatus, LLMTrainingJobStatus, LLMTuningJobStatus
from llmkube.api.base import WireModel
from llmkube.api.common import Condition
from llmkube.api.deployment import AutoscalingSpec
from llmkube.operator.conditions import find
from llmkube.operator.kube import DEPLOYMENTS, TRAINING_JOBS, TUNING_JOBS, KubeApi, Resource
from llmkube.operator.metrics import DEPLOYMENT_PHASE_COUNTS, record_replicas, record_search
from llmkube.operator.patches import merge_patch
from llmkube.operator.registry import TrainingPhasesAndRetries


def current_status(body: dict[str, Any]) -> LLMTrainingJobStatus:
    """A job's status as stored; an unreadable one (hand-edited) is treated as empty."""
    try:
        return LLMTrainingJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return LLMTrainingJobStatus()


def current_tuning_status(body: dict[str, Any]) -> LLMTuningJobStatus:
    try:
        return LLMTuningJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return LLMTuningJobStatus()


def current_deployment_status(body: dict[str, Any]) -> LLMDeploymentStatus:
    try:
        return LLMDeploymentStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return LLMDeploymentStatus()


def _write(
    api: KubeApi,
    resource: Resource,
    body: dict[str, Any],
    desired: WireModel,
    *,
    phase: str | None,
    message: str | None,
    conditions: list[Condition],
) -> bool:
    metadata = body["metadata"]
    stored = body.get("status") or {}
    patch = merge_patch(stored, desired.to_wire())
    if not patch:
        return False
    api.patch(resource, metadata["namespace"], metadata["name"], {"status": patch}, "status")
    if phase != stored.get("phase"):
        ready = find(conditions, "Ready")
        reason = ready.reason if ready else (phase or "Unknown")
        warning = phase in ("Failed", "Degraded") or (ready is not None and ready.status == "False")
        api.post_event(
            body,
            type="Warning" if warning else "Normal",
            reason=reason,
            message=f"{phase}: {message or ''}".rstrip(": "),
        )
    return True


def write_training_status(
    api: KubeApi,
    body: dict[str, Any],
    desired: LLMTrainingJobStatus,
    registry: TrainingPhasesAndRetries,
) -> bool:
    """Patch the status subresource if `desired` differs from the body's status. True if written."""
    metadata = body["metadata"]
    registry.observe(
        metadata["uid"],
        metadata["namespace"],
        metadata["name"],
        desired.phase,
        waiting=desired.waiting_for is not None,
    )
    return _write(
        api,
        TRAINING_JOBS,
        body,
        desired,
        phase=desired.phase,
        message=desired.message,
        conditions=desired.conditions,
    )


def write_tuning_status(
    api: KubeApi,
    body: dict[str, Any],
    desired: LLMTuningJobStatus,
    registry: TrainingPhasesAndRetries,
    metric: str,
) -> bool:
    """Like write_training_status, for a search; also its trial and best-metric gauges."""
    meta = body["metadata"]
    registry.observe(
        meta["uid"], meta["namespace"], meta["name"], desired.phase, kind="LLMTuningJob"
    )
    counts = desired.trials
    best = desired.best_trial
    record_search(
        meta["namespace"],
        meta["name"],
        {
            "running": counts.running,
            "succeeded": counts.succeeded,
            "stopped_early": counts.stopped_early,
            "failed": counts.failed,
        },
        (metric, best.metric) if best is not None else None,
    )
    return _write(
        api,
        TUNING_JOBS,
        body,
        desired,
        phase=desired.phase,
        message=desired.message,
        conditions=desired.conditions,
    )


def _max_replicas(body: dict[str, Any]) -> int | None:
    try:
        autoscaling = AutoscalingSpec.model_validate(
            (body.get("spec") or {}).get("autoscaling") or {}
        )
    except ValidationError:  # an InvalidSpec deployment: nothing scales it
        return None
    return autoscaling.max_replicas if autoscaling.enabled else None


def write_deployment_status(
    api: KubeApi, body: dict[str, Any], desired: LLMDeploymentStatus
) -> bool:
    meta = body["metadata"]
    DEPLOYMENT_PHASE_COUNTS.set(meta["uid"], desired.phase)
    wanted = desired.desired_replicas or 0
    record_replicas(
        meta["namespace"],
        meta["name"],
        ready=desired.ready_replicas or 0,
        desired=wanted,
        maximum=_max_replicas(body),
    )
    return _write(
        api,
        DEPLOYMENTS,
        body,
        desired,
        phase=desired.phase,
        message=desired.message,
        conditions=desired.conditions,
    )
