"""The local Serve entrypoint as a real subprocess in its own session."""

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

from llmkube.api.runconfig import ServeRunConfig
from llmkube.testing.processes import free_port, http_get
from llmkube.testing.training import session_processes


class ServeProcess:
    def __init__(
        self, config: ServeRunConfig, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config_path = workdir / "serve.json"
        config_path.write_text(config.model_dump_json(by_alias=True))
        self.log_path = workdir / "serve.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llmkube.runtime.serve",
                    "--config",
                    str(config_path),
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log}")
            if http_get(f"{self.url}/readyz") is not None:
                return
            time.sleep(0.5)
        raise AssertionError(f"serve not ready after {timeout}s:\n{self.log[-4000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a clean shutdown), then make sure nothing of the session is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        code = self.process.poll()
        deadline = time.monotonic() + 30
        while (alive := session_processes(self.process.pid)) and time.monotonic() < deadline:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
            time.sleep(0.2)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        return -1 if code is None else code

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
