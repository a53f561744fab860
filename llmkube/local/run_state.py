"""`state.json` beside a local run's log: what `llmkube run` is doing with a job or deployment
(the local counterpart of an object's status), for `llmkube console`. `llmkube run` is its one
writer."""

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

STATE_FILE = "state.json"


class LocalRunState(BaseModel):
    phase: str
    """Training: Running, Succeeded, Failed, Stopped. Serving: Starting, Serving, Stopped,
    Failed."""
    message: str = ""
    started_at: str
    """When this `llmkube run` started the job (RFC 3339)."""
    pid: int
    """The `llmkube run` process: a Running job whose process is gone was stopped."""
    endpoint: str | None = None
    """A deployment's OpenAI API base URL while it serves."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_state(
    workdir: Path,
    phase: str,
    *,
    message: str = "",
    endpoint: str | None = None,
    started_at: str | None = None,
) -> LocalRunState:
    state = LocalRunState(
        phase=phase,
        message=message,
        started_at=started_at or now(),
        pid=os.getpid(),
        endpoint=endpoint,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    partial = workdir / (STATE_FILE + ".partial")
    partial.write_text(state.model_dump_json(indent=2))
    partial.replace(workdir / STATE_FILE)  # readers see the old state or the new, whole
    return state


def read_state(workdir: Path) -> LocalRunState | None:
    """The state as written, except that a Running or Serving state whose process has died
    (kill -9, a crash) reads as Stopped."""
    try:
        state = LocalRunState.model_validate_json((workdir / STATE_FILE).read_text())
    except (OSError, ValidationError):
        return None
    if state.phase in ("Running", "Starting", "Serving") and not _alive(state.pid):
        return state.model_copy(
            update={
                "phase": "Stopped",
                "message": "llmkube run is no longer running",
                "endpoint": None,
            }
        )
    return state


def _alive(pid: int) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 0)
        return True
    return False
