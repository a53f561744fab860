"""What the operator and the runtime must agree on, each fact defined once and imported by both
sides (docs/architecture.md, "The operator-runtime contract"). Besides these, they share the run
configs (llmkube.api.runconfig) and the files under a job's output (llmkube.api.artifacts).
"""

from typing import Any, NamedTuple

from llmkube.api.base import API_GROUP, API_VERSION
from llmkube.api.runconfig import ServeRunConfig, adapters_user_config


class Resource(NamedTuple):
    """A Kubernetes resource as its API path names it."""

    group: str
    version: str
    plural: str


TRAINING_JOBS = Resource(API_GROUP, API_VERSION, "llmtrainingjobs")
TUNING_JOBS = Resource(API_GROUP, API_VERSION, "llmtuningjobs")
DEPLOYMENTS = Resource(API_GROUP, API_VERSION, "llmdeployments")
RAYJOBS = Resource("ray.io", "v1", "rayjobs")
RAYSERVICES = Resource("ray.io", "v1", "rayservices")
RAYCLUSTERS = Resource("ray.io", "v1", "rayclusters")

# The Ray Serve application a RayService runs (serveConfigV2) and `llmkube run` starts locally.
SERVE_IMPORT_PATH = "llmkube.runtime.serve:app"
SERVE_APP = "llm"
SERVE_DEPLOYMENT = "LLMServer"


def max_ongoing_requests(config: ServeRunConfig) -> int:
    """Serve's per-replica limit: above the engine's own, so the excess reaches the engine and
    is answered 429 with Retry-After instead of waiting in Serve's queue."""
    return 2 * config.serving.max_concurrent_requests


def replica_actor_options(config: ServeRunConfig) -> dict[str, float]:
    """What each Serve replica asks Ray for."""
    return {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica}


def serve_config(run_config: ServeRunConfig) -> dict[str, Any]:
    """The declarative Serve config (a RayService's serveConfigV2; `llmkube run` deploys the
    same). The adapters travel in the deployment's user_config, not in the app's args: Ray
    Serve restarts replicas when args change, and only calls `reconfigure` on them when the
    user_config does."""
    args = run_config.model_copy(update={"adapters": []}).to_wire()
    return {
        "applications": [
            {
                "name": SERVE_APP,
                "import_path": SERVE_IMPORT_PATH,
                "route_prefix": "/",
                "args": {"config": args},
                "deployments": [
                    {
                        "name": SERVE_DEPLOYMENT,
                        "num_replicas": run_config.replicas,
                        "max_ongoing_requests": max_ongoing_requests(run_config),
                        "ray_actor_options": replica_actor_options(run_config),
                        "user_config": adapters_user_config(run_config),
                    }
                ],
            }
        ]
    }


METRICS_PORT_ENV = "LLMKUBE_RAY_METRICS_PORT"
"""Set, Ray started by an entrypoint exports its metrics (the runtime's included) on this port."""

# Metrics the runtime records through Ray's metrics agent, which exports them as `ray_<name>`.
TRAIN_LOSS = "llmkube_train_loss"
EVAL_LOSS = "llmkube_eval_loss"
TRAIN_TOKENS_PER_SECOND = "llmkube_train_tokens_per_second"
TRAIN_STEP = "llmkube_train_step"
REQUESTS = "llmkube_requests_total"
REQUEST_DURATION = "llmkube_request_duration_seconds"
TIME_TO_FIRST_TOKEN = "llmkube_time_to_first_token_seconds"
INTER_TOKEN_LATENCY = "llmkube_inter_token_latency_seconds"
PROMPT_TOKENS = "llmkube_prompt_tokens_total"
GENERATED_TOKENS = "llmkube_generated_tokens_total"
REQUESTS_IN_FLIGHT = "llmkube_requests_in_flight"
QUEUE_DEPTH = "llmkube_queue_depth"
BATCH_SIZE = "llmkube_batch_size"
ADAPTERS_LOADED = "llmkube_adapters_loaded"
TRAINING_JOB_TAG = "training_job"
"""The training gauges' label (`job` is Prometheus' own target label)."""


def exported(metric: str) -> str:
    """The name Prometheus sees for a runtime metric."""
    return f"ray_{metric}"


def deployment_series(namespace: str | None, deployment: str) -> str:
    """The label matchers of one deployment's serving series. In a cluster the ServiceMonitor's
    scrape adds `namespace`; a local run's Prometheus (if any) has no such label: None."""
    own = f'deployment="{deployment}"'
    return own if namespace is None else f'namespace="{namespace}",{own}'


def ttft_p95(matchers: str) -> str:
    """The 95th percentile of time to first token over the last minute."""
    return (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate({exported(TIME_TO_FIRST_TOKEN)}_bucket{{{matchers}}}[1m])))"
    )
