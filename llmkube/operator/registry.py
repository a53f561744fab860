"""What the operator knows about the jobs it watches: phase (for metrics and progress polling)
and when a blocked job should be reconciled again. Shared by watch handlers and the background
loop, so it is thread-safe."""

import threading
import time
from dataclasses import dataclass

from llmkube.operator.metrics import TRAINING_JOBS, TRAINING_PHASES


@dataclass
class _Entry:
    namespace: str
    name: str
    phase: str | None = None
    retry_at: float | None = None


class JobRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, _Entry] = {}
        for phase in TRAINING_PHASES:
            TRAINING_JOBS.labels(phase=phase).set(0)

    def _entry(self, uid: str, namespace: str, name: str) -> _Entry:
        entry = self._jobs.get(uid)
        if entry is None:
            entry = self._jobs[uid] = _Entry(namespace, name)
        return entry

    def observe(self, uid: str, namespace: str, name: str, phase: str | None) -> None:
        with self._lock:
            entry = self._entry(uid, namespace, name)
            if entry.phase != phase:
                if entry.phase is not None:
                    TRAINING_JOBS.labels(phase=entry.phase).dec()
                if phase is not None:
                    TRAINING_JOBS.labels(phase=phase).inc()
                entry.phase = phase

    def retry_later(self, uid: str, namespace: str, name: str, delay: float) -> None:
        with self._lock:
            self._entry(uid, namespace, name).retry_at = time.monotonic() + delay

    def forget(self, uid: str) -> None:
        with self._lock:
            entry = self._jobs.pop(uid, None)
            if entry is not None and entry.phase is not None:
                TRAINING_JOBS.labels(phase=entry.phase).dec()

    def due_for_retry(self) -> list[tuple[str, str, str]]:
        """(uid, namespace, name) of blocked jobs whose retry time has come; clears them."""
        now = time.monotonic()
        with self._lock:
            due = [
                (uid, e.namespace, e.name)
                for uid, e in self._jobs.items()
                if e.retry_at is not None and e.retry_at <= now
            ]
            for uid, _, _ in due:
                self._jobs[uid].retry_at = None
        return due

    def in_phase(self, phase: str) -> list[tuple[str, str]]:
        with self._lock:
            return [(e.namespace, e.name) for e in self._jobs.values() if e.phase == phase]
