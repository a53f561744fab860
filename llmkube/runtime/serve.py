"""The Ray Serve application an LLMDeployment runs: `llmkube.runtime.serve:app`, with the run
config as its `config` argument (the operator writes it into the RayService's serveConfigV2).

Locally: `python -m llmkube.runtime.serve --config serve.json [--port 8000]` starts Ray and
Serve on this machine, deploys the same declarative Serve config a RayService carries, and
serves until SIGINT, SIGTERM or SIGHUP (or, when `llmkube run` started it, until that process
dies), then shuts Serve and Ray down and exits 0. Rewriting serve.json while it serves redeploys
it: changed adapters reach the running replica in place, as on a cluster.

With one replica, the replica itself answers on that port (Ray Serve's throughput-optimised mode
with direct ingress): each request and each streamed chunk skips the hop through Serve's proxy,
which moves to a spare port. On two cores that hop cost a third of the streamed throughput and
~20 ms of time to first token. Once the app is up, Ray's own daemons move to SCHED_IDLE
(llmkube.runtime.daemons), so that they run on spare CPU instead of interrupting the model's
threads (see benchmarks/README.md).
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import ray
import torch
from fastapi import FastAPI
from ray import serve
from ray.serve import Application
from ray.serve.context import _get_global_client
from ray.serve.schema import ApplicationStatus, ServeDeploySchema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmkube.api.contract import (
    METRICS_PORT_ENV,
    SERVE_APP,
    SERVE_DEPLOYMENT,
    max_ongoing_requests,
    replica_actor_options,
    serve_config,
)
from llmkube.api.runconfig import (
    RunConfigError,
    ServeRunConfig,
    adapters_from_user_config,
    adapters_user_config,
    read_run_config,
)
from llmkube.net import free_port, port_is_free
from llmkube.runtime.daemons import idle_ray_daemons
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.serving.adapters import AdapterSet
from llmkube.runtime.serving.api_keys import api_keys_for
from llmkube.runtime.serving.engine import Engine
from llmkube.runtime.serving.guard import RequestGuard, limit_bodies
from llmkube.runtime.serving.metrics import ServingMetrics
from llmkube.runtime.serving.openai_api import OpenAIService, ServiceOptions
from llmkube.runtime.serving.protocol import ApiError
from llmkube.runtime.serving.served_model import load_served_model, serving_limits
from llmkube.stopping import (
    ignore_stop_signals,
    raise_on_stop_signals,
    signal_name,
    stop_signal,
    stop_with_parent,
)
from llmkube.storage import StorageError, open_store
from llmkube.storage.models import inspect_model

DEPLOY_TIMEOUT_SECONDS = 900.0
"""Loading a pretrained model on two busy cores takes minutes; the replica's own errors end the
wait at once."""

api = FastAPI(title="llmkube", docs_url=None, redoc_url=None, openapi_url=None)
api.add_middleware(RequestGuard)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, error: HTTPException) -> Response:
    return ApiError(
        error.status_code, f"{request.method} {request.url.path}: {error.detail}"
    ).response()


@serve.deployment(name=SERVE_DEPLOYMENT)
@serve.ingress(api)
class LLMServer:
    def __init__(self, config: dict[str, Any]) -> None:
        run = ServeRunConfig.model_validate(config)
        torch.set_num_threads(run.cpus_per_replica)
        device = "cuda" if run.gpus_per_replica and torch.cuda.is_available() else "cpu"
        limit_bodies(run.serving.max_request_bytes)
        api_keys = api_keys_for(run)
        served = load_served_model(run, device)
        self.metrics = ServingMetrics(run.deployment.name, served.base_id)
        max_prompt, context = serving_limits(run, served.model.context_length)
        self.engine = Engine(
            served.model,
            served.tokenizer,
            max_batch_size=run.serving.max_batch_size,
            max_concurrent_requests=run.serving.max_concurrent_requests,
            stop_token_ids=sorted(served.codec.stop_ids),
            device=device,
            observer=self.metrics,
            context_length=context,
        )
        self.adapter_set = AdapterSet(served, self.engine, run.storage, run.serving.max_lora_rank)
        self.service = OpenAIService(
            self.engine,
            served,
            options=ServiceOptions(
                max_prompt_tokens=max_prompt,
                max_tokens=run.serving.max_tokens,
                stream_interval=run.serving.stream_interval,
                request_timeout=run.serving.request_timeout_seconds,
            ),
            api_keys=api_keys,
            metrics=self.metrics,
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray Serve calls this once the replica is up, and again in place whenever the
        deployment's user_config (its adapters) changes."""
        self.adapter_set.apply(adapters_from_user_config(user_config))
        self.metrics.adapters_loaded(len(self.adapter_set.served.adapters_loaded))

    @api.get("/v1/models")
    def models(self, request: Request) -> Response:
        return self.service.models(request)

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self.service.completions(request)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self.service.chat_completions(request)

    @api.get("/healthz")
    def healthz(self) -> Response:
        return self.service.health()

    def check_health(self) -> None:
        """Ray Serve's periodic replica check: a replica whose engine died is replaced."""
        if not self.engine.alive:
            raise RuntimeError(f"the generation engine stopped: {self.engine.failure}")

    @api.get("/readyz")
    def readyz(self) -> Response:
        return self.service.health()

    @api.get("/v1/adapters")
    def adapters(self) -> Response:
        """The adapters loaded, and those that could not be, with why."""
        return JSONResponse(
            {
                "loaded": self.adapter_set.served.adapters_loaded,
                "not_loaded": self.adapter_set.problems,
            }
        )

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def app(args: dict[str, Any]) -> Application:
    """The application builder Ray Serve calls with the serveConfigV2 `args`."""
    config = ServeRunConfig.model_validate(args["config"])
    application: Application = LLMServer.options(  # type: ignore[attr-defined]
        num_replicas=config.replicas,
        max_ongoing_requests=max_ongoing_requests(config),
        ray_actor_options=replica_actor_options(config),
        user_config=adapters_user_config(config),
    ).bind(config.model_copy(update={"adapters": []}).model_dump(mode="json", by_alias=True))
    return application


class PortInUseError(Exception):
    pass


def check_model(config: ServeRunConfig) -> None:
    """Fail before starting anything when there is no model at the URI, or not one llmkube
    serves."""
    inspect_model(open_store(config.model_uri, config.storage), config.model_uri)


def direct_ingress_env(http_port: int, grpc_port: int) -> dict[str, str]:
    """Ray Serve's throughput-optimised mode (experimental in Ray 2.60), with the single replica
    answering HTTP on `http_port`."""
    return {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_port + 1),  # exclusive
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_port + 1),
        # No load balancer has to take the replica out of rotation before it stops.
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
        # The mode turns replica logs off on stderr; locally that is the only place they show.
        "RAY_SERVE_LOG_TO_STDERR": "1",
    }


def serve_locally(config: ServeRunConfig, host: str, port: int, *, via_proxy: bool = False) -> None:
    check_model(config)
    if not port_is_free(host, port):
        raise PortInUseError(f"port {port} on {host} is in use; pass another with --port")
    proxy_port = port
    direct = config.replicas == 1 and not via_proxy
    if direct:
        # Set before ray.init: Ray's processes read these when they start.
        os.environ.update(direct_ingress_env(port, free_port(host)))
        proxy_port = free_port(host)
    metrics_port = os.environ.get(METRICS_PORT_ENV)
    ray.init(
        _metrics_export_port=int(metrics_port) if metrics_port else None,
        # Its head and nine module processes, idle, cost the model ~6% on two cores; Serve and the
        # metrics export (the per-node agent) run without it.
        include_dashboard=False,
    )
    raise_on_stop_signals()  # ray.init replaced our SIGTERM handler with its own
    serve.start(http_options={"host": host, "port": proxy_port})
    deploy(config)
    idle_ray_daemons(keep=() if direct else ("ray::ProxyActor",))


class DeployError(Exception):
    """Serve could not start the application; the message is Serve's."""


def deploy(config: ServeRunConfig, timeout: float = DEPLOY_TIMEOUT_SECONDS) -> None:
    """Deploy the serve config declaratively, as KubeRay does with a RayService's serveConfigV2,
    and wait until the application runs. Redeploying a changed config lets Serve decide what it
    takes: new adapters (user_config) reach the running replica in place; anything else
    restarts it."""
    # Serve's own client: what `serve deploy` and the dashboard's REST API call.
    client = _get_global_client()
    assert client is not None, "serve.start() first"
    client.deploy_apps(ServeDeploySchema(**serve_config(config)))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = serve.status().applications.get(SERVE_APP)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            return
        if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
            raise DeployError(f"Serve could not start the model server: {status.message}")
        time.sleep(0.5)
    raise DeployError(f"the model server did not start within {timeout:.0f}s")


def _reload(path: Path, config: ServeRunConfig) -> ServeRunConfig:
    """Redeploy when the config file changed (and still reads as a valid run config)."""
    try:
        changed = read_run_config(path, ServeRunConfig)
    except RunConfigError as error:
        print(f"error: {error}; still serving the previous config", file=sys.stderr, flush=True)
        return config
    if changed == config:
        return config
    try:
        deploy(changed)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return config
    print(f"reconfigured {changed.deployment.name} from {path}", flush=True)
    return changed


def main(argv: list[str] | None = None) -> int:
    raise_on_stop_signals()
    parser = argparse.ArgumentParser(prog="python -m llmkube.runtime.serve", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="the serve run config (JSON)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--via-proxy",
        action="store_true",
        help="answer through Serve's proxy even with one replica, as on a cluster",
    )
    args = parser.parse_args(argv)
    try:
        config = read_run_config(args.config, ServeRunConfig)
    except RunConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    serving = False
    try:
        stop_with_parent()
        serve_locally(config, args.host, args.port, via_proxy=args.via_proxy)
        serving = True
        print(f"serving {config.deployment.name} at http://{args.host}:{args.port}/v1", flush=True)
        seen = args.config.stat().st_mtime_ns
        while True:
            # Short sleeps: a signal taken by one of Ray's threads still reaches us in a second.
            time.sleep(1.0)
            if args.config.stat().st_mtime_ns != seen:
                seen = args.config.stat().st_mtime_ns
                config = _reload(args.config, config)
    except (StorageError, ModelError, PortInUseError, DeployError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        ignore_stop_signals()
        print(f"stopping on {signal_name(stop_signal(interrupt))}", flush=True)
        if serving:
            serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
