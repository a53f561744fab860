"""The scaling policy: metric samples in, a replica count out. Pure, so it is table-tested.

Like the Kubernetes HPA: each evaluation makes a raw recommendation from metric/target; a scale
up happens only when every recommendation in the scale-up window asks for more (the window's
minimum), a scale down only when every one in the scale-down window asks for fewer (its
maximum), at most `maxStep` replicas at a time, within [minReplicas, maxReplicas]. A window
must have been observed in full before it justifies a change, so a freshly started operator (or
deployment) does not scale on its first sample.
"""

import math
from dataclasses import dataclass

from llmkube.api.deployment import AutoscalingSpec

# Metrics summed over the deployment: desired = total / target-per-replica.
ADDITIVE = {"inflightRequests", "queueDepth", "tokensPerSecond", "custom"}


@dataclass(frozen=True)
class Recommendation:
    at: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str

    def changes(self, current: int) -> bool:
        return self.replicas != current


def raw_recommendation(
    metric_type: str, value: float, target: float, current: int, tolerance: float
) -> int:
    """Replicas the metric asks for right now, before windows, steps and bounds."""
    if metric_type in ADDITIVE:
        if current > 0 and abs(value / (target * current) - 1) <= tolerance:
            return current
        return math.ceil(value / target)
    # A latency (ttftP95): replicas in proportion to how far it is over or under its target.
    ratio = value / target
    if abs(ratio - 1) <= tolerance:
        return current
    return math.ceil(max(current, 1) * ratio)


def decide(
    now: float,
    current: int,
    raw: int,
    history: list[Recommendation],
    spec: AutoscalingSpec,
) -> tuple[Decision, list[Recommendation]]:
    """The decision for this evaluation and the history to keep for the next one."""
    horizon = max(spec.scale_up.stabilization_seconds, spec.scale_down.stabilization_seconds)
    seen = [*history, Recommendation(now, raw)]
    kept = [r for r in seen if r.at >= now - horizon]
    older = [r for r in seen if r.at < now - horizon]
    # The newest older sample stays as proof that the windows are fully observed.
    history = [older[-1], *kept] if older else kept

    def window(seconds: int) -> list[int] | None:
        """The recommendations of the last `seconds`, or None while not yet observed that long."""
        if history[0].at > now - seconds:
            return None
        return [r.replicas for r in history if r.at >= now - seconds]

    up_window = window(spec.scale_up.stabilization_seconds)
    down_window = window(spec.scale_down.stabilization_seconds)
    low, high = spec.min_replicas, spec.max_replicas

    if current < low:
        return Decision(low, f"below minReplicas {low}"), history
    if current > high:
        return Decision(high, f"above maxReplicas {high}"), history

    wanted_up = min(up_window) if up_window else current
    wanted_down = max(down_window) if down_window else current
    if wanted_up > current:
        target = min(wanted_up, current + spec.scale_up.max_step, high)
        if target > current:
            return Decision(
                target,
                f"metric asked for at least {wanted_up} replicas for "
                f"{spec.scale_up.stabilization_seconds}s",
            ), history
        return Decision(current, f"at maxReplicas {high}"), history
    if wanted_down < current:
        target = max(wanted_down, current - spec.scale_down.max_step, low)
        if target < current:
            return Decision(
                target,
                f"metric asked for at most {wanted_down} replicas for "
                f"{spec.scale_down.stabilization_seconds}s",
            ), history
    return Decision(current, "within target"), history
