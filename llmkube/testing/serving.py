"""The local Serve entrypoint as a real subprocess in its own session, started with SIGINT
ignored, as a script's background job would start it."""

import time
from collections.abc import Mapping
from pathlib import Path

from llmkube.api.runconfig import ServeRunConfig
from llmkube.local.child import Child
from llmkube.local.runner import serve_command, write_run_config
from llmkube.testing.processes import as_background_job, free_port, http_get


class ServeProcess(Child):
    def __init__(
        self,
        config: ServeRunConfig,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        via_proxy: bool = False,
    ) -> None:
        self.port = free_port()
        self.config_path = write_run_config(config, workdir / "serve.json")
        command = serve_command(self.config_path, self.port, via_proxy=via_proxy)
        super().__init__(as_background_job(command), workdir / "serve.log", env or {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return self.log_text()

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log}")
            # The entrypoint's own line comes last, after it set up Ray's processes; /readyz
            # answers as soon as the replica does.
            if f"at {self.url}/v1" in self.log and http_get(f"{self.url}/readyz") is not None:
                return
            time.sleep(0.5)
        raise AssertionError(f"serve not ready after {timeout}s:\n{self.log[-4000:]}")
