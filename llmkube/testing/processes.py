"""Starting and stopping server processes that cannot outlive the test run that started them."""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from llmkube.local.child import Child, session_processes
from llmkube.net import free_port as free_port  # re-exported for the test harnesses
from llmkube.stopping import parent_death_signal


def _die_with_parent() -> None:
    # If the test runner is killed outright, the kernel kills the servers too: nothing leaks.
    parent_death_signal(signal.SIGKILL)


def as_background_job(command: Sequence[str]) -> list[str]:
    """`command` started as a script's background job (`cmd &` in a non-interactive shell)
    starts it: with SIGINT and SIGQUIT ignored. Whatever runs this way still has to stop on a
    signal, so the tests cannot pass or fail by how pytest itself was launched."""
    return ["sh", "-c", 'trap "" INT QUIT; exec "$@"', "sh", *command]


def stop_by_signal(child: Child, signum: int, timeout: float = 60.0) -> int:
    """Send `signum` to the child alone, as `kill` would; wait for it to exit and then for its
    session to empty *by itself* (no session kill); return its exit code. Fails, after killing
    whatever is left, when either takes longer than `timeout`."""
    child.process.send_signal(signum)
    deadline = time.monotonic() + timeout
    try:
        code = child.process.wait(timeout)
        while (left := session_processes(child.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
    except subprocess.TimeoutExpired:
        code, left = None, session_processes(child.process.pid)
    if code is None or left:
        child.kill_session()
        raise AssertionError(
            f"after {signal.Signals(signum).name}: exit code {code}, processes left {left}; "
            f"log {child.log_path}:\n{child.log_tail()}"
        )
    return code


def http_get(url: str, timeout: float = 2.0) -> str | None:
    """The body of a 200 response, or None when the server is not (yet) answering."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode()) if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


class ServerProcess:
    """One server binary, logging to a file, in its own process group.

    Start it from a thread that outlives it (normally the main thread): the kernel's
    parent-death signal follows the *thread* that spawned the child, not the process.
    """

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")  # a restarted server keeps its earlier log
        self.process = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} exited with code {code}; last log lines ({self.log_path}):\n"
                + self.log_tail()
            )

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    watch: Sequence[ServerProcess] = (),
    interval: float = 0.1,
) -> None:
    """Poll `ready` until it holds; fail fast with the server's log if one of `watch` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server in watch:
            server.check_running()
        if ready():
            return
        time.sleep(interval)
    logs = "\n".join(f"--- {s.name} ({s.log_path}):\n{s.log_tail()}" for s in watch)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s\n{logs}")


class StoppedOnExit(ABC):
    """`with Server.start() as server:` stops the server (and its children) on the way out."""

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
