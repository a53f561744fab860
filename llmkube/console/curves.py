"""A training run's curves from its metrics.jsonl, and how they are thinned for display: a chart
of 100,000 points is slow to send and draw, and a screen shows a few thousand at most."""

import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from llmkube.api.artifacts import MetricsRecord

DISPLAY_POINTS = 2000
"""The most points one curve sends to the browser."""


@dataclass(frozen=True)
class Curve:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class RunCurves:
    """Everything a job page draws, in the order the run logged it."""

    train_loss: Curve = field(default_factory=Curve)
    learning_rate: Curve = field(default_factory=Curve)
    tokens_per_second: Curve = field(default_factory=Curve)
    eval_loss: Curve = field(default_factory=Curve)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    """Every eval record whole (loss, perplexity, accuracy, sample generations)."""
    last_step: int = -1
    """The highest step of any record (-1: none yet)."""


def parse_metrics(text: str) -> RunCurves:
    """Lines that are not a metrics record (a partial last line, a hand edit) are skipped."""
    curves = RunCurves()
    last_step = -1
    for line in text.splitlines():
        try:
            raw = json.loads(line)
            record = MetricsRecord.model_validate(raw)
        except (ValueError, ValidationError):
            continue
        last_step = max(last_step, record.step)
        if record.kind == "train":
            _add(curves.train_loss, record.step, record.train_loss)
            _add(curves.learning_rate, record.step, record.learning_rate)
            _add(curves.tokens_per_second, record.step, record.tokens_per_second)
        elif record.kind == "eval":
            _add(curves.eval_loss, record.step, record.eval_loss)
            curves.evaluations.append(raw)
    return RunCurves(
        curves.train_loss,
        curves.learning_rate,
        curves.tokens_per_second,
        curves.eval_loss,
        curves.evaluations,
        last_step,
    )


def extended(curves: RunCurves, more: RunCurves) -> RunCurves:
    """`curves` followed by records logged after them (new lists: a cached value is shared)."""

    def join(first: Curve, second: Curve) -> Curve:
        return Curve(first.steps + second.steps, first.values + second.values)

    return RunCurves(
        join(curves.train_loss, more.train_loss),
        join(curves.learning_rate, more.learning_rate),
        join(curves.tokens_per_second, more.tokens_per_second),
        join(curves.eval_loss, more.eval_loss),
        curves.evaluations + more.evaluations,
        max(curves.last_step, more.last_step),
    )


def _add(curve: Curve, step: int, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        curve.steps.append(step)
        curve.values.append(value)


def thin(curve: Curve, max_points: int = DISPLAY_POINTS) -> Curve:
    """At most `max_points` points that keep the curve's shape: the steps are cut into equal
    buckets and each keeps its first, lowest, highest and last point, so a spike survives
    (a plain stride would drop most of them). A curve that fits is returned whole."""
    if len(curve) <= max_points:
        return curve
    per_bucket = 4
    buckets = max(1, max_points // per_bucket)
    size = len(curve) / buckets
    kept: list[int] = []
    for bucket in range(buckets):
        start, end = int(bucket * size), int((bucket + 1) * size)
        if start >= end:
            continue
        window = range(start, end)
        lowest = min(window, key=curve.values.__getitem__)
        highest = max(window, key=curve.values.__getitem__)
        kept.extend(sorted({start, lowest, highest, end - 1}))
    return Curve([curve.steps[i] for i in kept], [curve.values[i] for i in kept])


def since(curve: Curve, step: int) -> Curve:
    """The points after `step` (what a live chart has not drawn yet)."""
    first = next((i for i in range(len(curve) - 1, -1, -1) if curve.steps[i] <= step), -1) + 1
    return Curve(curve.steps[first:], curve.values[first:])
