"""An entrypoint run as a child process in its own session, so that stopping it stops the local
Ray cluster it started too. `llmkube run` and the test harnesses use it. The child also stops
when its parent dies, however it dies (llmkube.stopping)."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from llmkube.stopping import parent_env


def session_processes(session: int) -> list[int]:
    """PIDs of the live processes of a session (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry.name))
    return found


class Child:
    """Start it from the main thread: the kernel tells the child when the thread that started
    it exits, not the process."""

    def __init__(
        self, command: list[str], log_path: Path, env: Mapping[str, str] | None = None
    ) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {}), **parent_env()},
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def poll(self) -> int | None:
        return self.process.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def kill_now(self) -> None:
        """SIGKILL every process of the child's session once, without waiting (safe in a
        signal handler): what a second stop signal does while the child is being stopped."""
        for pid in session_processes(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def kill_session(self, timeout: float = 30.0) -> None:
        """SIGKILL the child and everything of its session; wait until all of it is gone."""
        deadline = time.monotonic() + timeout
        while session_processes(self.process.pid) and time.monotonic() < deadline:
            self.kill_now()
            time.sleep(0.2)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM the child (it shuts its Ray cluster down), then SIGKILL whatever is left of
        its session. Not SIGTERM to the whole session: a driver whose cluster died under it
        hangs in its own shutdown."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        code = self.process.poll()
        self.kill_session()
        return self.process.returncode if code is None else code
