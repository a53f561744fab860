"""Every PromQL expression of the shipped dashboards and alerts, run against a real Prometheus
scraping the real operator (on a real control plane), a real training run and a real Ray Serve
app under a short load: no expression may fail, and every measured one must return series."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

from llmkube.api.deployment import ServingSpec
from llmkube.api.runconfig import JobIdentity, ServeRunConfig, StorageConfig
from llmkube.api.tuning import BestTrial, TrialCounts, TuningProgress
from llmkube.cli import observability
from llmkube.storage import open_store
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.minio import MinioServer
from llmkube.testing.models import publish_byte_model
from llmkube.testing.operator import OperatorProcess
from llmkube.testing.processes import free_port, wait_until
from llmkube.testing.prometheus import PrometheusServer
from llmkube.testing.serving import ServeProcess
from llmkube.testing.training import TrainingProcess
from tests.cluster.helpers import apply, credentials_secret, eventually, get, patch_status
from tests.runtime.training_helpers import corpus, run_config, upload

NAME = "observed"


def load(url: str, stop: threading.Event, seconds: float = 600) -> None:
    """A mixed load (plain, streamed and one bad request, repeated) until `stop`: Ray exports a
    gauge only while it is being set."""
    body = {"model": NAME, "prompt": "The import statement", "max_tokens": 16}
    with httpx.Client(base_url=url, timeout=60) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            assert http.post("/v1/completions", json=body).status_code == 200
            streamed = http.post("/v1/completions", json={**body, "stream": True})
            assert streamed.status_code == 200
            assert http.post("/v1/completions", json={"model": NAME}).status_code == 400


def test_every_dashboard_and_alert_query_returns_series(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    storage = StorageConfig(endpoint=minio.endpoint, insecure=True)
    model_uri = f"s3://{bucket}/served/model"
    publish_byte_model(open_store(model_uri, storage, environ=minio.env), model_uri, steps=20)
    upload(minio, bucket, "data/topics.txt", corpus().encode())
    training = run_config(
        NAME,
        source=f"s3://{bucket}/data/",
        output=f"s3://{bucket}/out/",
        endpoint=minio.endpoint,
        spec={"training": {"maxSteps": 150, "batchSize": 8, "learningRate": 3e-3}},
    )
    serving = ServeRunConfig(
        deployment=JobIdentity(name=NAME, namespace=namespace),
        model_uri=model_uri,
        replicas=1,
        gpus_per_replica=0,
        cpus_per_replica=1,
        serving=ServingSpec(max_batch_size=4, max_concurrent_requests=16),
        storage=storage,
    )
    serve_metrics, train_metrics = free_port(), free_port()
    targets = [
        f"127.0.0.1:{port}" for port in (operator.metrics_port, serve_metrics, train_metrics)
    ]
    fast_export = {**minio.env, "RAY_metrics_report_interval_ms": "1000"}
    with (
        PrometheusServer.start(targets) as prometheus,
        ServeProcess(
            serving,
            tmp_path / "serve",
            {**fast_export, "LLMKUBE_RAY_METRICS_PORT": str(serve_metrics)},
        ) as serve,
        TrainingProcess(
            training,
            tmp_path / "train",
            {**fast_export, "LLMKUBE_RAY_METRICS_PORT": str(train_metrics)},
        ) as train,
    ):
        apply(
            control_plane,
            namespace,
            {
                "apiVersion": "llmkube.io/v1alpha1",
                "kind": "LLMDeployment",
                "metadata": {"name": NAME},
                "spec": {
                    "model": {"uri": model_uri},
                    "replicas": 1,
                    "serving": {"allowUnauthenticated": True},
                    "autoscaling": {
                        "enabled": True,
                        "maxReplicas": 3,
                        "prometheus": {"url": prometheus.url},
                    },
                },
            },
        )
        eventually(lambda: get(control_plane, "rayservice", NAME, namespace))
        observe_a_search(control_plane, namespace, minio, bucket)
        serve.wait_ready()
        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            loading = pool.submit(load, serve.url, stop)
            try:
                for expr in observability.measured_expressions():
                    wait_until(
                        partial(returns_series, prometheus, expr),
                        timeout=120,
                        what=f"series for {expr}",
                    )
                for expr in observability.alert_expressions():
                    prometheus.query(expr)  # raises if Prometheus refuses it
            finally:
                stop.set()
            loading.result()
        assert train.wait(300) == 0, train.log[-3000:]


def observe_a_search(
    control_plane: ControlPlane, namespace: str, minio: MinioServer, bucket: str
) -> None:
    """A search the operator follows, with a best trial in its progress.json."""
    apply(
        control_plane,
        namespace,
        credentials_secret("s3", minio.env),
        {
            "apiVersion": "llmkube.io/v1alpha1",
            "kind": "LLMTuningJob",
            "metadata": {"name": NAME},
            "spec": {
                "template": {
                    "model": {"preset": "tiny"},
                    "dataset": {"source": f"s3://{bucket}/data/"},
                    "storage": {
                        "endpoint": minio.endpoint,
                        "insecure": True,
                        "credentialsSecret": {"name": "s3"},
                    },
                    "training": {"maxSteps": 40},
                    "output": f"s3://{bucket}/search/",
                },
                "searchSpace": {"training.batchSize": {"type": "choice", "values": [4, 8]}},
            },
        },
    )
    progress = TuningProgress(
        trials=TrialCounts(total=2, running=1, succeeded=1),
        best_trial=BestTrial(
            trial="a-00000", params={"training.batchSize": 8}, metric=3.2, step=40
        ),
        updated_at="t",
    )
    upload(minio, bucket, "search/progress.json", progress.model_dump_json().encode())
    eventually(lambda: get(control_plane, "rayjob", f"{NAME}-tune", namespace))
    # No KubeRay acts in this namespace: its status is written as KubeRay's would read.
    patch_status(
        control_plane, "rayjob", f"{NAME}-tune", namespace, {"jobDeploymentStatus": "Running"}
    )


def returns_series(prometheus: PrometheusServer, expr: str) -> bool:
    return bool(prometheus.query(expr))
