"""The autoscaling policy on tables of samples, and PromQL response parsing."""

from typing import Any

import pytest

from llmkube.api.deployment import AutoscalingMetric, AutoscalingSpec
from llmkube.operator.deployment.autoscaler.policy import Recommendation, decide, raw_recommendation
from llmkube.operator.deployment.autoscaler.prometheus import PrometheusError, parse_value
from llmkube.operator.deployment.autoscaler.queries import promql

SPEC = AutoscalingSpec.model_validate(
    {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 8,
        "tolerance": 0.1,
        "scaleUp": {"stabilizationSeconds": 30, "maxStep": 4},
        "scaleDown": {"stabilizationSeconds": 120, "maxStep": 1},
    }
)


@pytest.mark.parametrize(
    ("metric", "value", "target", "current", "expected"),
    [
        ("inflightRequests", 40.0, 8.0, 2, 5),  # 40 in flight / 8 per replica
        ("inflightRequests", 16.5, 8.0, 2, 2),  # within the 10% tolerance band
        ("inflightRequests", 0.0, 8.0, 3, 0),  # idle: as few as allowed (bounds come later)
        ("queueDepth", 9.0, 4.0, 1, 3),
        ("tokensPerSecond", 2500.0, 1000.0, 2, 3),
        ("ttftP95", 1.0, 0.5, 2, 4),  # latency twice its target: twice the replicas
        ("ttftP95", 0.52, 0.5, 2, 2),  # within tolerance
        ("ttftP95", 0.1, 0.5, 4, 1),
        ("custom", 7.0, 2.0, 1, 4),
    ],
)
def test_raw_recommendation(
    metric: str, value: float, target: float, current: int, expected: int
) -> None:
    assert raw_recommendation(metric, value, target, current, 0.1) == expected


def run(samples: list[tuple[float, int]], current: int) -> list[tuple[float, int, int]]:
    """Feed (time, raw recommendation) samples; return (time, from, to) for each change."""
    history: list[Recommendation] = []
    changes = []
    for at, raw in samples:
        decision, history = decide(at, current, raw, history, SPEC)
        if decision.changes(current):
            changes.append((at, current, decision.replicas))
            current = decision.replicas
    return changes


def test_a_step_up_scales_once_the_window_has_seen_only_high_load() -> None:
    samples = [(float(t), 2) for t in range(0, 60, 10)] + [
        (float(t), 6) for t in range(60, 130, 10)
    ]
    assert run(samples, current=2) == [(90.0, 2, 6)]  # the first sample whose 30 s are all high


def test_scale_up_is_limited_by_max_step_and_max_replicas() -> None:
    samples = [(float(t), 50) for t in range(0, 100, 10)]
    assert run(samples, current=1) == [(30.0, 1, 5), (40.0, 5, 8)]


def test_a_drop_scales_down_only_after_the_scale_down_window_one_at_a_time() -> None:
    samples = [(float(t), 1) for t in range(0, 200, 10)]
    changes = run(samples, current=4)
    assert changes[0] == (120.0, 4, 3)
    assert [to for _, _, to in changes] == [3, 2, 1]


def test_a_square_wave_shorter_than_the_windows_never_flaps() -> None:
    # 20 s high, 20 s low: shorter than the 30 s scale-up and 120 s scale-down windows.
    samples = [(float(t), 6 if (t // 20) % 2 == 0 else 2) for t in range(0, 600, 5)]
    assert run(samples, current=3) == []


def test_nothing_scales_before_a_window_is_observed_in_full() -> None:
    assert run([(0.0, 8), (10.0, 8), (20.0, 8)], current=1) == []
    assert run([(0.0, 8), (10.0, 8), (20.0, 8), (30.0, 8)], current=1) == [(30.0, 1, 5)]


def test_bounds_win_immediately() -> None:
    decision, _ = decide(0.0, 12, 12, [], SPEC)
    assert (decision.replicas, decision.reason) == (8, "above maxReplicas 8")
    decision, _ = decide(0.0, 0, 0, [], SPEC)
    assert decision.replicas == 1


def test_history_is_pruned_to_the_longest_window() -> None:
    history: list[Recommendation] = []
    for t in range(0, 1000, 10):
        _, history = decide(float(t), 2, 2, history, SPEC)
    assert len(history) <= 14  # 120 s of 10 s samples, plus one proving the window is covered


@pytest.mark.parametrize(
    ("payload", "value"),
    [
        ({"status": "success", "data": {"resultType": "vector", "result": []}}, None),
        (
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "12.5"]}]},
            },
            12.5,
        ),
        (
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"value": [1, "1"]}, {"value": [1, "2"]}],
                },
            },
            3.0,
        ),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "4"]}}, 4.0),
        (
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"value": [1, "NaN"]}]},
            },
            None,
        ),
    ],
)
def test_parse_value(payload: dict[str, Any], value: float | None) -> None:
    assert parse_value(payload) == value


def test_parse_value_reports_query_errors() -> None:
    with pytest.raises(PrometheusError, match="parse error"):
        parse_value({"status": "error", "error": "parse error at char 5"})
    with pytest.raises(PrometheusError, match="matrix"):
        parse_value({"status": "success", "data": {"resultType": "matrix", "result": []}})


def test_built_in_queries_select_the_deployment() -> None:
    metric = AutoscalingMetric(type="inflightRequests")
    assert promql(metric, "ml", "chat") == (
        'sum(ray_llmkube_requests_in_flight{namespace="ml",deployment="chat"})'
    )
    ttft = AutoscalingMetric(type="ttftP95", target=0.5)
    assert "histogram_quantile(0.95" in promql(ttft, "ml", "chat")
    custom = AutoscalingMetric(type="custom", target=1, query="vector(3)")
    assert promql(custom, "ml", "chat") == "vector(3)"
