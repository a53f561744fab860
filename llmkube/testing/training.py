"""The training and tuning entrypoints as real subprocesses, each in its own session, so a test
can kill the driver together with the local Ray cluster it started, exactly as a pod dies.
Started with SIGINT ignored, as a script's background job would start them."""

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from llmkube.api.runconfig import TrainingRunConfig, TuningRunConfig
from llmkube.api.tuning import TUNING_CONFIG_FILE
from llmkube.local.child import Child, session_processes
from llmkube.local.runner import train_command, tune_command, write_run_config
from llmkube.testing.processes import as_background_job


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class TrainingProcess(Child):
    def __init__(
        self, config: TrainingRunConfig, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = write_run_config(config, workdir / "run.json")
        command = train_command(self.config_path)
        super().__init__(
            as_background_job(command), workdir / f"train-{time.monotonic_ns()}.log", env or {}
        )

    @property
    def log(self) -> str:
        return self.log_text()

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

    def kill(self) -> None:
        """SIGKILL the driver and everything it started, as when a pod dies."""
        self.kill_session()
        leftover = session_processes(self.process.pid)
        if leftover:
            raise AssertionError(f"processes survived the kill: {leftover}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.kill()


class TuningProcess(TrainingProcess):
    """The search entrypoint (`llmkube.runtime.tune`), started and killed the same way."""

    def __init__(
        self, config: TuningRunConfig, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = write_run_config(config, workdir / TUNING_CONFIG_FILE)
        Child.__init__(
            self,
            as_background_job(tune_command(self.config_path)),
            workdir / f"tune-{time.monotonic_ns()}.log",
            env or {},
        )
