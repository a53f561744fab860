"""The one place that writes LLMTrainingJob status: only on change, with an Event per phase."""

from typing import Any

from pydantic import ValidationError

from llmkube.api import LLMTrainingJobStatus
from llmkube.operator.conditions import find
from llmkube.operator.kube import TRAINING_JOBS, KubeApi
from llmkube.operator.patches import merge_patch
from llmkube.operator.registry import JobRegistry


def current_status(body: dict[str, Any]) -> LLMTrainingJobStatus:
    """The status as stored; an unreadable one (hand-edited) is treated as empty."""
    try:
        return LLMTrainingJobStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return LLMTrainingJobStatus()


def write_training_status(
    api: KubeApi, body: dict[str, Any], desired: LLMTrainingJobStatus, registry: JobRegistry
) -> bool:
    """Patch the status subresource if `desired` differs from the body's status. True if written."""
    metadata = body["metadata"]
    registry.observe(metadata["uid"], metadata["namespace"], metadata["name"], desired.phase)
    stored = body.get("status") or {}
    patch = merge_patch(stored, desired.to_wire())
    if not patch:
        return False
    api.patch(TRAINING_JOBS, metadata["namespace"], metadata["name"], {"status": patch}, "status")
    if desired.phase != stored.get("phase"):
        ready = find(desired.conditions, "Ready")
        reason = ready.reason if ready else (desired.phase or "Unknown")
        warning = desired.phase == "Failed" or (ready is not None and ready.status == "False")
        api.post_event(
            body,
            type="Warning" if warning else "Normal",
            reason=reason,
            message=f"{desired.phase}: {desired.message or ''}".rstrip(": "),
        )
    return True
