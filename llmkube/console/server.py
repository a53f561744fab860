"""Running the console's app with uvicorn in a thread of the calling process: `llmkube run` keeps
it beside the job, and it stops when that process does (nothing else to clean up)."""

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9265
"""Beside Ray's dashboard (8265) and the OpenAI API (8000), which `llmkube run` also opens."""


class ConsoleServer:
    def __init__(self, app: FastAPI, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
        # Bound here, not by uvicorn in its thread: a port in use fails the caller at once.
        self._socket = socket.create_server((host, port), reuse_port=False)
        self.host, self.port = host, self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            daemon=True,
            name="llmkube-console",
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "ConsoleServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        # Streams (SSE) never end by themselves: exit without waiting for them.
        self._server.should_exit = self._server.force_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
