"""One operator-wide loop for what watch events do not trigger: retrying blocked reconciles,
autoscaling deployments and polling running jobs' progress. (Kopf's per-object timers would do
this too, but they put a finalizer on every object they run for, which blocks deletion whenever
the operator is down.)"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from llmkube.operator.deployment.autoscaler.runner import Autoscaler
from llmkube.operator.kube import DEPLOYMENTS, TRAINING_JOBS, KubeApi
from llmkube.operator.registry import DeploymentRegistry, TrainingPhasesAndRetries
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.training.reconcile import refresh_training_status

log = logging.getLogger(__name__)
TICK_SECONDS = 1.0


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

    def run(self) -> None:
        next_progress = time.monotonic() + self.settings.progress_interval_seconds
        while not self.stopping.wait(TICK_SECONDS):
            self._retry_blocked()
            self.autoscaler.tick(self.deployments.autoscaled())
            if time.monotonic() >= next_progress:
                self._poll_progress()
                next_progress = time.monotonic() + self.settings.progress_interval_seconds

    def _retry_blocked(self) -> None:
        for kind, namespace, name in self.registry.due_for_retry():
            resource = DEPLOYMENTS if kind == "LLMDeployment" else TRAINING_JOBS
            try:
                body = self.api.get(resource, namespace, name)
                if body is not None:
                    self.reconcile(body)
            except Exception:  # one bad object must not stop the loop for the others
                log.exception("retrying %s/%s failed", namespace, name)

    def _poll_progress(self) -> None:
        for namespace, name in self.registry.in_phase("Running"):
            try:
                refresh_training_status(
                    self.api, namespace, name, self.settings, self.registry, read_progress=True
                )
            except Exception:
                log.exception("reading the progress of %s/%s failed", namespace, name)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)
