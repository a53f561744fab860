"""The llmkube operator as a real subprocess against a test control plane: start, kill, restart."""

import sys
from pathlib import Path

from llmkube.testing.processes import ServerProcess, free_port, http_get, wait_until


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_dir = log_dir
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.env = {
            "KUBECONFIG": str(kubeconfig),
            "LLMKUBE_METRICS_PORT": str(self.metrics_port),
            "LLMKUBE_HEALTH_PORT": str(self.health_port),
            **(env or {}),
        }
        self.process: ServerProcess | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0, *, wait: bool = True) -> "OperatorProcess":
        """Start it; with `wait`, return once its liveness endpoint answers."""
        self.starts += 1
        self.process = ServerProcess(
            f"operator-{self.starts}",
            [sys.executable, "-m", "llmkube.operator"],
            self.log_dir,
            env=self.env,
        )
        if wait:
            wait_until(self.healthy, timeout=timeout, what="operator", watch=[self.process])
        return self

    def healthy(self) -> bool:
        return http_get(f"http://127.0.0.1:{self.health_port}/healthz") is not None

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.metrics_port}/metrics") or ""

    def kill(self) -> None:
        """SIGKILL: no cleanup runs, as when a node dies."""
        if self.process is not None:
            self.process.process.kill()
            self.process.process.wait()
            self.process.stop()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.log_dir.glob("operator-*.log"))
        )
