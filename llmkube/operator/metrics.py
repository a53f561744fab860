"""The operator's own Prometheus metrics (design.md §5 names)."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "llmkube_operator_reconcile_total", "Reconciles by resource kind and result", ["kind", "result"]
)
RECONCILE_SECONDS = Histogram(
    "llmkube_operator_reconcile_duration_seconds", "Time spent in one reconcile", ["kind"]
)
TRAINING_JOBS = Gauge("llmkube_trainingjobs", "LLMTrainingJobs by phase", ["phase"])
TRAINING_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")
AUTOSCALER_DECISIONS = Counter(
    "llmkube_autoscaler_decisions_total", "Replica changes made by the autoscaler", ["direction"]
)


@contextmanager
def observe_reconcile(kind: str) -> Iterator[None]:
    began = time.perf_counter()
    try:
        yield
    except Exception as error:
        RECONCILES.labels(kind=kind, result=type(error).__name__).inc()
        raise
    else:
        RECONCILES.labels(kind=kind, result="success").inc()
    finally:
        RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - began)


def serve(port: int) -> None:
    start_http_server(port)
