"""The training entrypoint as a real subprocess in its own session, so a test can kill the
driver together with the local Ray cluster it started, exactly as a pod dies."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from llmkube.api.runconfig import TrainingRunConfig


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


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class TrainingProcess:
    def __init__(
        self, config: TrainingRunConfig, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "run.json"
        self.config_path.write_text(config.model_dump_json(by_alias=True))
        self.log_path = workdir / f"train-{time.monotonic_ns()}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llmkube.runtime.train", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"training did not end in {timeout}s:\n{self.log[-4000:]}"
            ) from None

    def train_workers(self) -> list[int]:
        return [
            pid
            for pid in session_processes(self.process.pid)
            if "RayTrainWorker" in command_line(pid)
        ]

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL the driver and everything it started; wait until all of it is gone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = session_processes(self.process.pid)
            if self.process.poll() is None:
                alive.append(self.process.pid)
            if not alive:
                break
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        self.process.wait(5)
        leftover = session_processes(self.process.pid)
        if leftover:
            raise AssertionError(f"processes survived the kill: {leftover}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.kill()
