"""One operator-wide loop for what watch events do not trigger: retrying blocked reconciles,
autoscaling deployments, polling running jobs' progress and the pods of starting Ray clusters.
(Kopf's per-object timers would do this too, but they put a finalizer on every object they run
for, which blocks deletion whenever the operator is down.)

The loop only decides what is due; the work runs on a pool, at most one piece per object and
kind of work at a time. So one user's endpoint that never answers (a Prometheus, an S3) holds up
that user's own object until its call's short deadline, and nobody else's autoscaling or status.
"""

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from llmkube.operator.deployment.autoscaler.runner import Autoscaler
from llmkube.operator.deployment.reconcile import refresh_deployment_status
from llmkube.operator.kube import DEPLOYMENTS, RAYSERVICES, TRAINING_JOBS, TUNING_JOBS, KubeApi
from llmkube.operator.naming import label_value, rayservice_name
from llmkube.operator.registry import DeploymentRegistry, TrainingPhasesAndRetries
from llmkube.operator.scheduling import scheduler_refusal
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.training.reconcile import refresh_training_status, unscheduled_ray_pods
from llmkube.operator.tuning.reconcile import refresh_tuning_status

log = logging.getLogger(__name__)
TICK_SECONDS = 1.0
WorkKey = tuple[str, str, str]
"""(what, namespace, name): at most one of each runs at a time."""
WORKERS = 8
"""Objects worked on at once; each call has a deadline of a few seconds (quick_store, the
Prometheus query), so even as many black-holed endpoints only delay the rest by that much."""


class BackgroundLoop(threading.Thread):
    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        registry: TrainingPhasesAndRetries,
        reconcile: Callable[[dict[str, Any]], None],
        deployments: DeploymentRegistry,
    ) -> None:
        super().__init__(name="llmkube-background", daemon=True)
        self.api = api
        self.settings = settings
        self.registry = registry
        self.reconcile = reconcile
        self.deployments = deployments
        self.autoscaler = Autoscaler(api, settings)
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="llmkube-work")
        self._busy: set[WorkKey] = set()
        self._busy_lock = threading.Lock()

    def run(self) -> None:
        next_progress = time.monotonic() + self.settings.progress_interval_seconds
        while not self.stopping.wait(TICK_SECONDS):
            for kind, namespace, name in self.registry.due_for_retry():
                self._start(("retry", namespace, name), partial(self._retry, kind, namespace, name))
            now = time.monotonic()
            for namespace, name in self.autoscaler.due(self.deployments.autoscaled(), now):
                evaluate = partial(self.autoscaler.evaluate, namespace, name, now=now)
                self._start(("autoscale", namespace, name), evaluate)
            if now >= next_progress:
                for namespace, name in self.registry.in_phase("Running"):
                    self._start(
                        ("progress", namespace, name), partial(self._progress, namespace, name)
                    )
                for namespace, name in self.registry.in_phase("Running", kind="LLMTuningJob"):
                    self._start(
                        ("search-progress", namespace, name),
                        partial(self._search_progress, namespace, name),
                    )
                # Pods the scheduler cannot place change no RayJob or RayService: look for them.
                pending: dict[str, list[str]] = {}
                for namespace, name in self.registry.in_phase("Pending"):
                    pending.setdefault(namespace, []).append(name)
                for namespace, names in pending.items():
                    self._start(
                        ("scheduling", namespace, ""), partial(self._scheduling, namespace, names)
                    )
                for namespace, name in self.deployments.starting():
                    self._start(
                        ("deployment-scheduling", namespace, name),
                        partial(self._deployment_scheduling, namespace, name),
                    )
                next_progress = now + self.settings.progress_interval_seconds

    def _start(self, key: WorkKey, work: Callable[[], None]) -> None:
        """Run `work` on the pool, unless the same work for the same object is still running
        (then this round is skipped: the next one comes soon)."""
        with self._busy_lock:
            if key in self._busy:
                return
            self._busy.add(key)

        def run() -> None:
            try:
                work()
            except Exception:  # one object's trouble must not stop the others
                log.exception("%s of %s/%s failed", *key)
            finally:
                with self._busy_lock:
                    self._busy.discard(key)

        self.pool.submit(run)

    def _retry(self, kind: str, namespace: str, name: str) -> None:
        resource = {"LLMDeployment": DEPLOYMENTS, "LLMTuningJob": TUNING_JOBS}.get(
            kind, TRAINING_JOBS
        )
        body = self.api.get(resource, namespace, name)
        if body is not None:
            self.reconcile(body)

    def _progress(self, namespace: str, name: str) -> None:
        refresh_training_status(
            self.api, namespace, name, self.settings, self.registry, read_progress=True
        )

    def _search_progress(self, namespace: str, name: str) -> None:
        refresh_tuning_status(
            self.api, namespace, name, self.settings, self.registry, read_progress=True
        )

    def _scheduling(self, namespace: str, names: list[str]) -> None:
        """One LIST of the namespace's unbound Ray pods; then only the jobs that have some, or
        whose status still says they wait, are refreshed."""
        unscheduled = unscheduled_ray_pods(self.api, namespace)
        waiting = self.registry.waiting()
        for name in names:
            pods = unscheduled.get(label_value(name), [])
            # Pods the scheduler has not tried yet say nothing: only a refusal is news.
            refused = any(scheduler_refusal(pod) is not None for pod in pods)
            if refused or (namespace, name) in waiting:
                refresh_training_status(
                    self.api,
                    namespace,
                    name,
                    self.settings,
                    self.registry,
                    read_progress=False,
                    unscheduled=pods,
                )

    def _deployment_scheduling(self, namespace: str, name: str) -> None:
        rayservice = self.api.get(RAYSERVICES, namespace, rayservice_name(name))
        if rayservice is not None:
            refresh_deployment_status(self.api, namespace, name, rayservice)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
        self.pool.shutdown(wait=False, cancel_futures=True)
