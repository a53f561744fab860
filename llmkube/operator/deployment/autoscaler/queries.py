"""The PromQL behind each built-in autoscaling metric: the runtime's metrics (llmkube.api.contract)
as Ray exports them, with its `ray_` prefix."""

from llmkube.api.contract import (
    GENERATED_TOKENS,
    QUEUE_DEPTH,
    REQUESTS_IN_FLIGHT,
    deployment_series,
    exported,
    ttft_p95,
)
from llmkube.api.deployment import AutoscalingMetric


def promql(metric: AutoscalingMetric, namespace: str, deployment: str) -> str:
    """One number for the whole deployment."""
    if metric.type == "custom":
        assert metric.query is not None  # validated
        return metric.query
    match = deployment_series(namespace, deployment)
    return {
        "inflightRequests": f"sum({exported(REQUESTS_IN_FLIGHT)}{{{match}}})",
        "queueDepth": f"sum({exported(QUEUE_DEPTH)}{{{match}}})",
        "tokensPerSecond": f"sum(rate({exported(GENERATED_TOKENS)}{{{match}}}[1m]))",
        "ttftP95": ttft_p95(match),
    }[metric.type]
