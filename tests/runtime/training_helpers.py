"""Building training run configs and datasets for the runtime tests."""

import io
import json
import pydoc_data.topics
import time
from pathlib import Path
from typing import Any

from llmkube.api import LLMTrainingJob
from llmkube.api.artifacts import METRICS_FILE, MODEL_DIR, PROGRESS_FILE
from llmkube.api.runconfig import TrainingRunConfig, training_run_config
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.store import LocalStore
from llmkube.storage.uri import join
from llmkube.storage.versions import resolve_model
from llmkube.testing.minio import MinioServer


def corpus() -> str:
    """About 465 KB of real English: the Python language reference topics."""
    return "\n\n".join(pydoc_data.topics.topics.values())


def upload(minio: MinioServer, bucket: str, key: str, data: bytes) -> None:
    minio.client().put_object(bucket, key, io.BytesIO(data), len(data))


def run_config(
    name: str,
    *,
    source: str,
    output: str,
    endpoint: str | None,
    spec: dict[str, Any] | None = None,
) -> TrainingRunConfig:
    """A tiny 2-worker CPU job; `spec` entries replace whole top-level spec sections."""
    manifest: dict[str, Any] = {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"preset": "tiny"},
            "tokenizer": {"type": "byte"},
            "dataset": {"source": source},
            "storage": {"endpoint": endpoint, "insecure": True} if endpoint else {},
            "training": {"maxSteps": 200, "batchSize": 8, "learningRate": 3e-3},
            "evaluation": {"interval": 100, "batches": 8},
            "checkpoint": {"interval": 50, "keep": 2},
            "resources": {"workers": 2, "gpusPerWorker": 0, "cpusPerWorker": 1},
            "output": output,
            "backoffLimit": 2,
            **(spec or {}),
        },
    }
    return training_run_config(LLMTrainingJob.model_validate(manifest))


def store_for(config: TrainingRunConfig, minio: MinioServer) -> ObjectStore:
    return open_store(config.output, config.storage, environ=minio.env)


def metrics(store: ObjectStore, output: str) -> list[dict[str, Any]]:
    text = store.read_bytes(join(output, METRICS_FILE)).decode()
    return [json.loads(line) for line in text.splitlines()]


def progress(store: ObjectStore, output: str) -> dict[str, Any] | None:
    uri = join(output, PROGRESS_FILE)
    if not store.exists(uri):
        return None
    loaded: dict[str, Any] = json.loads(store.read_bytes(uri))
    return loaded


def wait_for_checkpoint(
    store: ObjectStore, output: str, at_least: int, timeout: float, log: Path
) -> int:
    """The step of the first checkpoint at or past `at_least` that progress.json reports."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = progress(store, output)
        if state and (state.get("checkpoint_step") or 0) >= at_least:
            step: int = state["checkpoint_step"]
            return step
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint at step >= {at_least} in {timeout}s:\n{log.read_text()}")


def published_folder(output: Path) -> Path:
    """The version folder a file:// output's model/ points at."""
    resolved = resolve_model(LocalStore(), f"file://{output}/{MODEL_DIR}")
    assert resolved.version is not None, f"nothing published under {output}"
    return Path(resolved.uri.removeprefix("file://"))
