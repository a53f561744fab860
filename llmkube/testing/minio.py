"""A real MinIO server on loopback, built from source by hack/build-binaries.sh."""

import secrets
import shutil
import tempfile
from pathlib import Path

from minio import Minio

from llmkube.testing.binaries import server_binaries
from llmkube.testing.processes import (
    ServerProcess,
    StoppedOnExit,
    free_port,
    http_get,
    wait_until,
)


class MinioServer(StoppedOnExit):
    """`with MinioServer.start() as s3:` — an empty MinIO with its own root credentials."""

    def __init__(self, workdir: Path, owns_workdir: bool) -> None:
        self.workdir = workdir
        self._owns_workdir = owns_workdir
        self.port = free_port()
        self.console_port = free_port()
        self.access_key = "llmkube-" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        self.binary = server_binaries()["minio"]
        self.process: ServerProcess | None = None

    @classmethod
    def start(cls, workdir: Path | None = None, *, timeout: float = 60.0) -> "MinioServer":
        owns = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="llmkube-minio-")) if workdir is None else workdir
        server = cls(workdir, owns)
        try:
            server.resume(timeout=timeout)
        except BaseException:
            server.stop()
            raise
        return server

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """The environment variables the runtime reads credentials from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def client(self) -> Minio:
        return Minio(self.endpoint, self.access_key, self.secret_key, secure=False)

    def make_bucket(self, name: str) -> None:
        client = self.client()
        if not client.bucket_exists(name):
            client.make_bucket(name)

    def _live(self) -> bool:
        return http_get(f"http://{self.endpoint}/minio/health/live") is not None

    def pause(self) -> None:
        """Stop the server, keeping its data and port, to simulate an outage."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    def resume(self, *, timeout: float = 60.0) -> None:
        """Start (or restart after `pause`) on the same port and data."""
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.process = ServerProcess(
            "minio",
            [
                str(self.binary),
                "server",
                str(self.workdir / "data"),
                f"--address=127.0.0.1:{self.port}",
                f"--console-address=127.0.0.1:{self.console_port}",
                "--quiet",
            ],
            self.workdir,
            env={
                "MINIO_ROOT_USER": self.access_key,
                "MINIO_ROOT_PASSWORD": self.secret_key,
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
            },
        )
        wait_until(self._live, timeout=timeout, what="minio", watch=[self.process])

    def stop(self) -> None:
        self.pause()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
