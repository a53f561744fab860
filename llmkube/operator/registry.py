"""What the operator knows about the objects it watches: phase (for metrics and progress polling)
and when a blocked job should be reconciled again. Shared by watch handlers and the background
loop, so it is thread-safe."""

import threading
import time
from dataclasses import dataclass

from llmkube.operator.metrics import TRAINING_JOB_PHASES


@dataclass
class _Entry:
    namespace: str
    name: str
    kind: str = "LLMTrainingJob"
    phase: str | None = None
    waiting: bool = False
    retry_at: float | None = None


class TrainingPhasesAndRetries:
    """The phase of every training job and search (for the phase metric and progress polling),
    and when a blocked object of any kind is to be reconciled again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Entry] = {}
        self._followed: dict[str, object] = {}

    def followed_unchanged(self, rayjob_uid: str, state: object) -> bool:
        """Whether a RayJob's followed state is what the last successful refresh saw."""
        with self._lock:
            return self._followed.get(rayjob_uid) == state

    def record_followed(self, rayjob_uid: str, state: object | None) -> None:
        """What a refresh saw of a RayJob (None: the RayJob is gone)."""
        with self._lock:
            if state is None:
                self._followed.pop(rayjob_uid, None)
            else:
                self._followed[rayjob_uid] = state

    def _entry(self, uid: str, namespace: str, name: str) -> _Entry:
        entry = self._jobs.get(uid)
        if entry is None:
            entry = self._jobs[uid] = _Entry(namespace, name)
        return entry

    def observe(
        self,
        uid: str,
        namespace: str,
        name: str,
        phase: str | None,
        waiting: bool = False,
        kind: str = "LLMTrainingJob",
    ) -> None:
        """`waiting`: its status says its pods wait on the scheduler (status.waitingFor)."""
        with self._lock:
            entry = self._entry(uid, namespace, name)
            entry.phase, entry.waiting, entry.kind = phase, waiting, kind
        if kind == "LLMTrainingJob":
            TRAINING_JOB_PHASES.set(uid, phase)

    def retry_later(
        self, uid: str, namespace: str, name: str, delay: float, kind: str = "LLMTrainingJob"
    ) -> None:
        with self._lock:
            entry = self._entry(uid, namespace, name)
            entry.kind = kind
            entry.retry_at = time.monotonic() + delay

    def forget(self, uid: str) -> None:
        with self._lock:
            self._jobs.pop(uid, None)
        TRAINING_JOB_PHASES.set(uid, None)

    def due_for_retry(self) -> list[tuple[str, str, str]]:
        """(kind, namespace, name) of blocked objects whose retry time has come; clears them."""
        now = time.monotonic()
        with self._lock:
            due = [
                (uid, e)
                for uid, e in self._jobs.items()
                if e.retry_at is not None and e.retry_at <= now
            ]
            for _, entry in due:
                entry.retry_at = None
        return [(entry.kind, entry.namespace, entry.name) for _, entry in due]

    def in_phase(self, phase: str, kind: str = "LLMTrainingJob") -> list[tuple[str, str]]:
        with self._lock:
            return [
                (e.namespace, e.name)
                for e in self._jobs.values()
                if e.phase == phase and e.kind == kind
            ]

    def waiting(self) -> set[tuple[str, str]]:
        """Training jobs whose status says their pods wait on the scheduler."""
        with self._lock:
            return {
                (e.namespace, e.name)
                for e in self._jobs.values()
                if e.waiting and e.kind == "LLMTrainingJob"
            }


def job_key(kind: str, name: str) -> str:
    """How a deployment names the job it follows: a training job and a search may share a
    name."""
    return f"{kind}/{name}"


class DeploymentRegistry:
    """Which deployments wait on which jobs (their model's and their adapters', by `job_key`),
    which ones autoscale, and which ones have a Ray cluster starting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs_of: dict[tuple[str, str], frozenset[str]] = {}
        self._autoscaled: set[tuple[str, str]] = set()
        self._starting: set[tuple[str, str]] = set()
        self._published: dict[tuple[str, str], object] = {}

    def observe(self, namespace: str, name: str, jobs: frozenset[str], autoscaled: bool) -> None:
        with self._lock:
            self._jobs_of[(namespace, name)] = jobs
            if autoscaled:
                self._autoscaled.add((namespace, name))
            else:
                self._autoscaled.discard((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs_of.pop((namespace, name), None)
            self._autoscaled.discard((namespace, name))
            self._starting.discard((namespace, name))

    def cluster_starting(self, namespace: str, name: str, starting: bool) -> None:
        """Whether KubeRay is bringing up a cluster for the deployment (the first, or a
        rollout's new one): its pods may wait on the scheduler, which no RayService event says."""
        with self._lock:
            if starting:
                self._starting.add((namespace, name))
            else:
                self._starting.discard((namespace, name))

    def starting(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._starting)

    def job_changed(self, namespace: str, job: str, published: object) -> bool:
        """Whether what a job has published (phase, time, URI) differs from last time."""
        with self._lock:
            previous = self._published.get((namespace, job))
            self._published[(namespace, job)] = published
            return previous != published

    def forget_job(self, namespace: str, job: str) -> None:
        with self._lock:
            self._published.pop((namespace, job), None)

    def following(self, namespace: str, job: str) -> list[str]:
        """Deployments serving what `job` (a `job_key`) publishes (as model or adapter)."""
        with self._lock:
            return [n for (ns, n), j in self._jobs_of.items() if ns == namespace and job in j]

    def autoscaled(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._autoscaled)
