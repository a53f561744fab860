"""A real Prometheus server (Debian's package; `hack/setup.sh --tests` installs it)."""

import json
import shutil
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from llmkube.testing.binaries import MissingBinaryError
from llmkube.testing.processes import (
    ServerProcess,
    StoppedOnExit,
    free_port,
    http_get,
    wait_until,
)


class PrometheusServer(StoppedOnExit):
    def __init__(self, workdir: Path, owns_workdir: bool, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise MissingBinaryError(
                "prometheus not found: run hack/setup.sh --tests (it installs Debian's package)"
            )
        self.binary = binary
        self.workdir = workdir
        self._owns_workdir = owns_workdir
        self.port = free_port()
        self.process: ServerProcess | None = None
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "targets", "static_configs": [{"targets": targets}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))

    @classmethod
    def start(cls, targets: list[str], workdir: Path | None = None) -> "PrometheusServer":
        owns = workdir is None
        workdir = (
            Path(tempfile.mkdtemp(prefix="llmkube-prometheus-")) if workdir is None else workdir
        )
        server = cls(workdir, owns, targets)
        try:
            server.resume()
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant-vector result of a PromQL query ([] while it has no series)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        body = http_get(url)
        if body is None:
            raise AssertionError(f"Prometheus did not answer {promql!r}")
        answer = json.loads(body)
        if answer.get("status") != "success":
            raise AssertionError(f"{promql!r} failed: {answer}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def _ready(self) -> bool:
        return http_get(f"{self.url}/-/ready") is not None

    def pause(self) -> None:
        """Stop serving (keeping data and port), to test what happens while Prometheus is down."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def resume(self, timeout: float = 60.0) -> None:
        self.process = ServerProcess(
            "prometheus",
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.workdir,
        )
        wait_until(self._ready, timeout=timeout, what="prometheus", watch=[self.process])

    def stop(self) -> None:
        self.pause()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
