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


def spec_applied(
    conditions: list[Condition],
    ignored_spec_changes: list[str],
    *,
    unchangeable: str,
    generation: int | None,
    now: str,
) -> list[Condition]:
    """SpecApplied: whether the running RayJob matches the spec; `unchangeable` says, after
    the fields changed in vain, why and what to do instead."""
    if ignored_spec_changes:
        return set_condition(
            conditions,
            type="SpecApplied",
            status="False",
            reason="ImmutableSpec",
            message=(
                f"changes to {', '.join(ignored_spec_changes)} were not applied: {unchangeable}"
            ),
            generation=generation,
            now=now,
        )
    return set_condition(
        conditions,
        type="SpecApplied",
        status="True",
        reason="Applied",
        message="the running RayJob matches the spec",
        generation=generation,
        now=now,
    )
