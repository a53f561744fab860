"""A deployment's live numbers (requests/s, time to first token, tokens/s) from Prometheus, when
the console is given one: the same series and PromQL as the serving dashboard and the
autoscaler (llmkube.api.contract)."""

import threading
import time
from dataclasses import dataclass

import httpx

from llmkube.api.contract import GENERATED_TOKENS, REQUESTS, exported, ttft_p95

CACHE_SECONDS = 5.0
TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ServingNumbers:
    requests_per_second: float | None = None
    ttft_p95_seconds: float | None = None
    tokens_per_second: float | None = None
    error: str | None = None
    """Why Prometheus could not answer (the page says so instead of showing numbers)."""


def serving_queries(matchers: str) -> dict[str, str]:
    return {
        "requests_per_second": f"sum(rate({exported(REQUESTS)}{{{matchers}}}[1m]))",
        "ttft_p95_seconds": ttft_p95(matchers),
        "tokens_per_second": f"sum(rate({exported(GENERATED_TOKENS)}{{{matchers}}}[1m]))",
    }


class PrometheusNumbers:
    """Asks Prometheus' HTTP API at most once per deployment every few seconds (every open
    deployments page polls)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._cache: dict[str, tuple[float, ServingNumbers]] = {}
        self._lock = threading.Lock()

    def numbers(self, matchers: str) -> ServingNumbers:
        with self._lock:
            hit = self._cache.get(matchers)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        found = self._query_all(matchers)
        with self._lock:
            self._cache[matchers] = (time.monotonic() + CACHE_SECONDS, found)
        return found

    def _query_all(self, matchers: str) -> ServingNumbers:
        values: dict[str, float | None] = {}
        try:
            with httpx.Client(timeout=TIMEOUT_SECONDS) as client:
                for name, promql in serving_queries(matchers).items():
                    answer = client.get(f"{self.url}/api/v1/query", params={"query": promql})
                    answer.raise_for_status()
                    values[name] = _scalar(answer.json())
        except (httpx.HTTPError, ValueError) as failure:
            return ServingNumbers(error=f"Prometheus at {self.url}: {failure}")
        return ServingNumbers(
            requests_per_second=values["requests_per_second"],
            ttft_p95_seconds=values["ttft_p95_seconds"],
            tokens_per_second=values["tokens_per_second"],
        )


def _scalar(body: dict[str, object]) -> float | None:
    """The value of a one-series vector; None for no series or NaN (no requests yet)."""
    result = body.get("data", {}).get("result", [])  # type: ignore[attr-defined]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value
