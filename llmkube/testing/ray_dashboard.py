"""What KubeRay asks a Ray head, answered for a simulated fleet whose pods run no Ray.

KubeRay's controller learns two facts only from inside Ray: whether a job it submitted has
ended (`GET /api/jobs/<id>` on the head's dashboard) and whether Ray Serve's applications are
healthy (`GET /api/serve/applications/`, after it `PUT`s the config there; and `GET /-/healthz`
on the head's serving port). On kwok's nodes no Ray runs, so this stand-in answers instead,
and the test decides those two facts, and only those.

KubeRay reaches it as its HTTP proxy (`HTTP_PROXY`): it calls the head Service by its DNS name,
which a proxy receives whole, so one stand-in knows which namespace and cluster each question is
about without any DNS or pod networking. Every other fact (pods, nodes, Services, endpoints,
RayJob/RayService status) is still the real controllers' work.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from llmkube.testing.processes import StoppedOnExit

HEAD_SERVICE_SUFFIX = "-head-svc"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass
class RayJob:
    status: str = "RUNNING"
    message: str = ""
    start_time: int = field(default_factory=lambda: int(time.time() * 1000))
    end_time: int = 0

    def answer(self, job_id: str) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "submission_id": job_id,
            "type": "SUBMISSION",
            "status": self.status,
            "entrypoint": "",
            "message": self.message,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }


@dataclass
class Heads:
    """What the Ray heads of the fleet would say, keyed by (namespace, cluster or job id)."""

    jobs: dict[tuple[str, str], RayJob] = field(default_factory=dict)
    serve_configs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    serving: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def job(self, namespace: str, job_id: str) -> RayJob:
        # KubeRay asks only after its submitter Job exists: the job was submitted and runs.
        return self.jobs.setdefault((namespace, job_id), RayJob())

    def serve_details(self, namespace: str, cluster: str) -> dict[str, Any]:
        config = self.serve_configs.get((namespace, cluster), {})
        healthy = (namespace, cluster) in self.serving
        applications = {}
        for app in config.get("applications", []):
            deployments = {
                deployment["name"]: {
                    "name": deployment["name"],
                    "status": "HEALTHY" if healthy else "UPDATING",
                    "message": "",
                }
                for deployment in app.get("deployments", [])
            }
            applications[app["name"]] = {
                "name": app["name"],
                "route_prefix": app.get("route_prefix", "/"),
                "status": "RUNNING" if healthy else "DEPLOYING",
                "message": "" if healthy else "Deploying app (simulated: no Ray runs here).",
                "deployments": deployments,
            }
        return {"deploy_mode": "MULTI_APP", "applications": applications}


class RayDashboardStandIn(StoppedOnExit):
    """An HTTP proxy that answers as the Ray head of whichever cluster it is asked about."""

    def __init__(self) -> None:
        self.heads = Heads()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.heads))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def proxy_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def end_job(self, namespace: str, job_id: str, status: str, message: str = "") -> None:
        """The Ray job `job_id` ends: SUCCEEDED, FAILED or STOPPED."""
        assert status in TERMINAL, status
        with self.heads.lock:
            job = self.heads.job(namespace, job_id)
            job.status, job.message = status, message
            job.end_time = int(time.time() * 1000)

    def serve_healthy(self, namespace: str, cluster: str) -> None:
        """Ray Serve in `cluster` reports every application RUNNING and deployment HEALTHY
        (until then, an application KubeRay deployed there is DEPLOYING)."""
        with self.heads.lock:
            self.heads.serving.add((namespace, cluster))

    def serve_config(self, namespace: str, cluster: str) -> dict[str, Any] | None:
        """The Serve config KubeRay last PUT to `cluster`'s head, if any."""
        with self.heads.lock:
            return self.heads.serve_configs.get((namespace, cluster))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(heads: Heads) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer("GET")

        def do_PUT(self) -> None:
            self._answer("PUT")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def _answer(self, method: str) -> None:
            url = urlsplit(self.path)
            host = url.hostname or ""
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if url.path == "/-/healthz":
                # A Serve proxy actor's health on a pod IP: Ray is up wherever a head runs.
                self._send(200, "success")
                return
            service, _, rest = host.partition(".")
            namespace = rest.split(".", 1)[0]
            cluster = service.removesuffix(HEAD_SERVICE_SUFFIX)
            with heads.lock:
                code, answer = _route(heads, method, url.path, namespace, cluster, body)
            self._send(code, answer)

        def _send(self, code: int, answer: object) -> None:
            data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # KubeRay gave up first (its client waits 2 s) and asks again later

        def log_message(self, format: str, *args: Any) -> None:
            pass  # KubeRay polls every few seconds; its own log says what it asked

    return Handler


def _route(
    heads: Heads, method: str, path: str, namespace: str, cluster: str, body: bytes
) -> tuple[int, object]:
    if path == "/api/serve/applications/":
        if method == "PUT":
            heads.serve_configs[(namespace, cluster)] = json.loads(body or b"{}")
            return 200, {}
        return 200, heads.serve_details(namespace, cluster)
    if path.startswith("/api/jobs/"):
        job_id, _, action = path.removeprefix("/api/jobs/").partition("/")
        if not job_id:
            listed = [job.answer(i) for (ns, i), job in heads.jobs.items() if ns == namespace]
            return 200, listed
        job = heads.job(namespace, job_id)
        if method == "POST" and action == "stop":
            stopped = job.status not in TERMINAL
            if stopped:
                job.status, job.end_time = "STOPPED", int(time.time() * 1000)
            return 200, {"stopped": stopped}
        if method == "DELETE":
            return 200, {"deleted": True}
        return 200, job.answer(job_id)
    return 404, {"error": f"the stand-in does not answer {method} {path}"}
