"""Serving metrics (names in llmkube.api.contract), recorded through Ray's metrics agent.

Each replica is its own process; Ray's per-node agent aggregates them and exports on the Ray
metrics port (8080 under KubeRay, which the operator's Service and ServiceMonitor scrape). Ray
prefixes application metrics with `ray_`, so Prometheus sees e.g. `ray_llmkube_requests_total`.

Request and token metrics carry the `model` the request asked for: the deployment's own model,
its base (`<name>-base`) or one of its adapters. Only ids the deployment serves ever become
labels (a request for another id is answered 404 before anything is recorded), so the label's
cardinality is bounded by the spec.
"""

from ray.util.metrics import Counter, Gauge, Histogram

from llmkube.api.contract import (
    ADAPTERS_LOADED,
    BATCH_SIZE,
    GENERATED_TOKENS,
    INTER_TOKEN_LATENCY,
    PROMPT_TOKENS,
    QUEUE_DEPTH,
    REQUEST_DURATION,
    REQUESTS,
    REQUESTS_IN_FLIGHT,
    TIME_TO_FIRST_TOKEN,
)

LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
TOKEN_LATENCY_BOUNDARIES = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
TAGS = ("deployment", "model")


class ServingMetrics:
    """The engine's observer plus the HTTP layer's request accounting. `base_id` is the model id
    of requests without an adapter."""

    def __init__(self, deployment: str, base_id: str) -> None:
        self.deployment = deployment
        self.base_id = base_id
        self.tags = {"deployment": deployment, "model": base_id}
        self.requests = Counter(
            REQUESTS,
            description="Requests answered, by HTTP status.",
            tag_keys=(*TAGS, "status"),
        )
        self.duration = Histogram(
            REQUEST_DURATION,
            description="Time from a request's arrival to its last byte.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=TAGS,
        )
        self.ttft = Histogram(
            TIME_TO_FIRST_TOKEN,
            description="Time from a request's arrival to its first generated token.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=TAGS,
        )
        self.itl = Histogram(
            INTER_TOKEN_LATENCY,
            description="Time between consecutive generated tokens of a request.",
            boundaries=TOKEN_LATENCY_BOUNDARIES,
            tag_keys=TAGS,
        )
        self.prompt_tokens = Counter(
            PROMPT_TOKENS, description="Prompt tokens processed.", tag_keys=TAGS
        )
        self.generated_tokens = Counter(
            GENERATED_TOKENS, description="Tokens generated.", tag_keys=TAGS
        )
        self.in_flight = Gauge(
            REQUESTS_IN_FLIGHT,
            description="Requests being answered (queued or decoding).",
            tag_keys=TAGS,
        )
        self.queue = Gauge(
            QUEUE_DEPTH,
            description="Requests waiting for a batch slot.",
            tag_keys=TAGS,
        )
        self.batch = Gauge(
            BATCH_SIZE, description="Sequences in the latest decode step.", tag_keys=TAGS
        )
        self.adapters = Gauge(
            ADAPTERS_LOADED,
            description="LoRA adapters loaded in the replica.",
            tag_keys=("deployment",),
        )
        self._in_flight = 0
        self._adapters = 0
        for gauge in (self.in_flight, self.queue, self.batch):
            gauge.set(0, tags=self.tags)
        self.adapters.set(0, tags={"deployment": deployment})

    def _tags(self, model: str | None) -> dict[str, str]:
        return {"deployment": self.deployment, "model": model or self.base_id}

    # The HTTP layer.
    def started(self, prompt_tokens: int, model: str) -> None:
        self._in_flight += 1
        self.in_flight.set(self._in_flight, tags=self.tags)
        # Ray exports a gauge only while it is being set: the adapter count is set again here.
        self.adapters.set(self._adapters, tags={"deployment": self.deployment})
        self.prompt_tokens.inc(prompt_tokens, tags=self._tags(model))

    def finished(self) -> None:
        self._in_flight -= 1
        self.in_flight.set(self._in_flight, tags=self.tags)

    def answered(self, status: int, seconds: float, model: str | None) -> None:
        """`model`: the id the request asked for, None when it named none the deployment serves
        (counted under the base id)."""
        self.requests.inc(1, tags={**self._tags(model), "status": str(status)})
        self.duration.observe(seconds, tags=self._tags(model))

    def adapters_loaded(self, count: int) -> None:
        self._adapters = count
        self.adapters.set(count, tags={"deployment": self.deployment})

    # The engine (EngineObserver).
    def queue_depth(self, waiting: int) -> None:
        self.queue.set(waiting, tags=self.tags)

    def admitted(self, waited_seconds: float) -> None:
        pass

    def batch_size(self, running: int) -> None:
        self.batch.set(running, tags=self.tags)

    def first_token(self, seconds: float, adapter: str | None) -> None:
        self.ttft.observe(seconds, tags=self._tags(adapter))

    def inter_token(self, seconds: float, adapter: str | None) -> None:
        self.itl.observe(seconds, tags=self._tags(adapter))

    def generated(self, tokens: int, adapter: str | None) -> None:
        self.generated_tokens.inc(tokens, tags=self._tags(adapter))
