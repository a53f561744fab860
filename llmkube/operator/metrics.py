"""The operator's own Prometheus metrics (their names are in docs/operator.md)."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "llmkube_operator_reconcile_total", "Reconciles by resource kind and result", ["kind", "result"]
)
RECONCILE_SECONDS = Histogram(
    "llmkube_operator_reconcile_duration_seconds", "Time spent in one reconcile", ["kind"]
)
TRAINING_JOBS_BY_PHASE = Gauge("llmkube_trainingjobs", "LLMTrainingJobs by phase", ["phase"])
TRAINING_PHASES = ("Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended")
DEPLOYMENTS_BY_PHASE = Gauge("llmkube_deployments", "LLMDeployments by phase", ["phase"])
DEPLOYMENT_PHASES = (
    "Pending",
    "WaitingForModel",
    "Queued",
    "Deploying",
    "Ready",
    "Degraded",
    "Failed",
)
AUTOSCALER_DECISIONS = Counter(
    "llmkube_autoscaler_decisions_total", "Replica changes made by the autoscaler", ["direction"]
)
for _direction in ("up", "down"):  # both series exist from the start, at 0
    AUTOSCALER_DECISIONS.labels(direction=_direction)


TUNING_LABELS = ["namespace", "tuning_job"]
TUNING_TRIALS = Gauge(
    "llmkube_tuning_trials", "Trials of each LLMTuningJob by state", [*TUNING_LABELS, "state"]
)
TUNING_TRIAL_STATES = ("running", "succeeded", "stopped_early", "failed")
TUNING_BEST_METRIC = Gauge(
    "llmkube_tuning_best_metric",
    "The objective of each LLMTuningJob's best trial so far",
    [*TUNING_LABELS, "metric"],
)


def record_search(
    namespace: str, job: str, trials: dict[str, int], best: tuple[str, float] | None
) -> None:
    """A search's trial counts by state, and (metric, value) of its best trial."""
    for state in TUNING_TRIAL_STATES:
        TUNING_TRIALS.labels(namespace=namespace, tuning_job=job, state=state).set(
            trials.get(state, 0)
        )
    if best is not None:
        metric, value = best
        TUNING_BEST_METRIC.labels(namespace=namespace, tuning_job=job, metric=metric).set(value)


def forget_search(namespace: str, job: str) -> None:
    for state in TUNING_TRIAL_STATES:
        with suppress(KeyError):
            TUNING_TRIALS.remove(namespace, job, state)
    for metric in ("eval_loss", "eval_perplexity", "eval_accuracy"):
        with suppress(KeyError):
            TUNING_BEST_METRIC.remove(namespace, job, metric)


DEPLOYMENT_LABELS = ["namespace", "deployment"]
DEPLOYMENT_READY_REPLICAS = Gauge(
    "llmkube_deployment_ready_replicas", "Serving replicas ready", DEPLOYMENT_LABELS
)
DEPLOYMENT_DESIRED_REPLICAS = Gauge(
    "llmkube_deployment_desired_replicas",
    "Serving replicas asked for (spec.replicas)",
    DEPLOYMENT_LABELS,
)
DEPLOYMENT_MAX_REPLICAS = Gauge(
    "llmkube_deployment_max_replicas",
    "The autoscaler's maxReplicas (only for deployments the operator autoscales)",
    DEPLOYMENT_LABELS,
)
_REPLICA_GAUGES = (DEPLOYMENT_READY_REPLICAS, DEPLOYMENT_DESIRED_REPLICAS, DEPLOYMENT_MAX_REPLICAS)


def record_replicas(
    namespace: str, deployment: str, *, ready: int, desired: int, maximum: int | None
) -> None:
    for gauge, value in zip(_REPLICA_GAUGES, (ready, desired, maximum), strict=True):
        if value is None:
            with suppress(KeyError):
                gauge.remove(namespace, deployment)
        else:
            gauge.labels(namespace=namespace, deployment=deployment).set(value)


def forget_replicas(namespace: str, deployment: str) -> None:
    for gauge in _REPLICA_GAUGES:
        with suppress(KeyError):
            gauge.remove(namespace, deployment)


class PhaseGauge:
    """A gauge counting objects per phase, kept from each object's latest phase."""

    def __init__(self, gauge: Gauge, phases: tuple[str, ...]) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._phase_of: dict[str, str] = {}
        for phase in phases:
            gauge.labels(phase=phase).set(0)

    def set(self, uid: str, phase: str | None) -> None:
        """Record an object's phase; None forgets the object."""
        with self._lock:
            previous = self._phase_of.pop(uid, None)
            if previous is not None:
                self._gauge.labels(phase=previous).dec()
            if phase is not None:
                self._phase_of[uid] = phase
                self._gauge.labels(phase=phase).inc()


TRAINING_JOB_PHASES = PhaseGauge(TRAINING_JOBS_BY_PHASE, TRAINING_PHASES)
DEPLOYMENT_PHASE_COUNTS = PhaseGauge(DEPLOYMENTS_BY_PHASE, DEPLOYMENT_PHASES)


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
