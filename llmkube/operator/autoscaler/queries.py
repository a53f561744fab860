"""The PromQL behind each built-in autoscaling metric: design.md §5 names as Ray exports them
(with its `ray_` prefix; see llmkube/runtime/serving/metrics.py)."""

from llmkube.api.deployment import AutoscalingMetric


def promql(metric: AutoscalingMetric, namespace: str, deployment: str) -> str:
    """One number for the whole deployment."""
    if metric.type == "custom":
        assert metric.query is not None  # validated
        return metric.query
    match = f'namespace="{namespace}",deployment="{deployment}"'
    return {
        "inflightRequests": f"sum(ray_llmkube_requests_in_flight{{{match}}})",
        "queueDepth": f"sum(ray_llmkube_queue_depth{{{match}}})",
        "tokensPerSecond": f"sum(rate(ray_llmkube_generated_tokens_total{{{match}}}[1m]))",
        "ttftP95": (
            "histogram_quantile(0.95, sum by (le) "
            f"(rate(ray_llmkube_time_to_first_token_seconds_bucket{{{match}}}[1m])))"
        ),
    }[metric.type]
