"""`llmkube run` as a user runs it: a real subprocess, started as a script's background job
would start it (SIGINT ignored), watched through its log and the entrypoints it starts."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from llmkube.local.child import session_processes
from llmkube.testing.processes import as_background_job
from llmkube.testing.training import command_line

LLMKUBE = [sys.executable, "-m", "llmkube.cli.main"]


class Run:
    def __init__(self, data_dir: Path, *args: str, job: str = "pydoc") -> None:
        self.job = job
        self.log_path = data_dir / f"run-{time.monotonic_ns()}.log"
        self.sessions: set[int] = set()
        self.data_dir = data_dir
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                as_background_job([*LLMKUBE, "run", *args]),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "LLMKUBE_DATA_DIR": str(data_dir), "COLUMNS": "200"},
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def watch_children(self) -> None:
        """Remember the sessions of the entrypoints `llmkube run` started."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            command = command_line(int(entry.name))
            if str(self.data_dir) in command and "llmkube.runtime." in command:
                self.sessions.add(int(entry.name))

    def _wait(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch_children()
            if done():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"llmkube run exited {self.process.returncode}:\n{self.log}")
            time.sleep(0.2)
        raise AssertionError(f"no {what} in {timeout}s:\n{self.log}")

    def wait_for(self, text: str, timeout: float) -> None:
        self._wait(lambda: text in self.log, repr(text), timeout)

    def wait_for_checkpoint(self, output: Path, timeout: float) -> None:
        progress = output / "progress.json"  # written atomically
        self._wait(
            lambda: progress.exists() and bool(json.loads(progress.read_text())["checkpoint_step"]),
            "checkpoint",
            timeout,
        )

    def wait_for_training(self, timeout: float) -> None:
        """Until the training workers run: their step-0 evaluation is logged."""
        self._wait(lambda: "eval at step 0" in self.train_log, "training", timeout)

    @property
    def train_log(self) -> str:
        path = self.data_dir / "runs" / self.job / "train.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def interrupt(self, signum: int = signal.SIGINT, timeout: float = 120) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def assert_nothing_left(self, timeout: float = 20) -> None:
        assert self.sessions, "the test never saw the entrypoints"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = [pid for session in self.sessions for pid in session_processes(session)]
            if not left:
                return
            time.sleep(0.5)
        raise AssertionError(f"processes left behind: {left}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for session in self.sessions:
            for pid in session_processes(session):
                os.kill(pid, signal.SIGKILL)


def write_sample_data(data_dir: Path) -> str:
    """`llmkube data sample --no-model` into `data_dir`; returns what it printed."""
    sample = subprocess.run(
        [*LLMKUBE, "data", "sample", "--no-model"],
        env={**os.environ, "LLMKUBE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert sample.returncode == 0, sample.stderr
    return sample.stdout
