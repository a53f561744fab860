"""metav1.Condition bookkeeping: a transition time changes only when the status does."""

import datetime
from typing import Literal

from llmkube.api.common import Condition

ConditionStatus = Literal["True", "False", "Unknown"]


def utcnow() -> str:
    """Now, as Kubernetes writes timestamps (lastTransitionTime, startTime)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    previous = next((c for c in conditions if c.type == type), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [*(c for c in conditions if c.type != type), updated]


def find(conditions: list[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)
