"""The training entrypoint for real: MinIO for data and output, a local Ray cluster, 2 workers."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from llmkube.api.artifacts import EVAL_FILE, model_pointer_uri
from llmkube.api.export import EXPORT_MANIFEST_FILE, ExportManifest
from llmkube.api.runconfig import TrainingRunConfig
from llmkube.runtime.artifact import load_artifact
from llmkube.runtime.data.manifest import MANIFEST_FILE, DataManifest
from llmkube.runtime.data.shards import open_splits
from llmkube.runtime.export.onnx_runner import generate_onnx, open_export
from llmkube.runtime.sampling import generate
from llmkube.runtime.training.checkpoint import (
    OPTIMIZER_FILE,
    RNG_FILE,
    WEIGHTS_FILE,
    complete_checkpoints,
    load_state,
    load_torch,
)
from llmkube.runtime.training.evaluate import evaluate
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import resolve_model
from llmkube.testing.minio import MinioServer
from llmkube.testing.processes import free_port, stop_by_signal, wait_until
from llmkube.testing.prometheus import PrometheusServer
from llmkube.testing.training import TrainingProcess
from tests.runtime.training_helpers import (
    corpus,
    metrics,
    progress,
    run_config,
    store_for,
    upload,
    wait_for_checkpoint,
)

RUN_TIMEOUT = 300.0


@pytest.fixture
def dataset(minio: MinioServer, bucket: str) -> str:
    text = corpus()
    half = len(text) // 2
    # Two files, so preparation runs two Ray read tasks.
    upload(minio, bucket, "data/topics-1.txt", text[:half].encode())
    upload(minio, bucket, "data/topics-2.txt", text[half:].encode())
    return f"s3://{bucket}/data/"


def config_for(minio: MinioServer, bucket: str, dataset: str, **spec: object) -> TrainingRunConfig:
    return run_config(
        "topics",
        source=dataset,
        output=f"s3://{bucket}/out/",
        endpoint=minio.endpoint,
        spec=dict(spec),
    )


def check_onnx_export(
    store: ObjectStore,
    config: TrainingRunConfig,
    minio: MinioServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """<output>/onnx/ holds a complete export of the published version that generates what
    PyTorch does (the model is trained: its greedy picks are not near-ties)."""
    published = resolve_model(store, join(config.output, "model"))
    onnx_uri = join(config.output, "onnx")
    manifest = ExportManifest.model_validate_json(
        store.read_bytes(join(onnx_uri, EXPORT_MANIFEST_FILE))
    )
    assert (manifest.source, manifest.source_version) == (published.uri, published.version)
    assert manifest.parity.prefill_max_abs_diff < manifest.parity.bound == 1e-3
    assert manifest.parity.decode_max_abs_diff < 1e-3
    for name, value in minio.env.items():  # the credentials, as `llmkube generate` reads them
        monkeypatch.setenv(name, value)
    opened = open_export(onnx_uri, config.storage)
    loaded = load_artifact(store, join(config.output, "model"))
    prompt = opened.codec.encode("The ")
    assert generate_onnx(opened.decoder, opened.manifest, prompt, 12) == generate(
        loaded.model, prompt, 12
    )


def test_trains_evaluates_and_publishes(
    minio: MinioServer,
    bucket: str,
    dataset: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_for(
        minio,
        bucket,
        dataset,
        tokenizer={"type": "bpe", "vocabSize": 512},
        training={"maxSteps": 200, "batchSize": 8, "learningRate": 3e-3},
        evaluation={"interval": 100, "batches": 8, "samplePrompts": ["The "], "maxNewTokens": 8},
    )
    metrics_port = free_port()
    with PrometheusServer.start([f"127.0.0.1:{metrics_port}"]) as prometheus:
        env = {
            **minio.env,
            "LLMKUBE_RAY_METRICS_PORT": str(metrics_port),
            "RAY_metrics_report_interval_ms": "1000",
        }
        with TrainingProcess(config, tmp_path, env) as run:
            assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
            # The credentials came from the environment; nothing the run wrote repeats them.
            recorded = open_store(config.output, config.storage, environ=minio.env).read_bytes(
                join(config.output, "run.json")
            )
            for secret in minio.env.values():
                assert secret.encode() not in recorded
                assert secret not in run.log

            # Ray exports the gauges with its own `ray_` prefix; `job` is Prometheus' own label.
            def exported(name: str) -> list[float]:
                query = f'max_over_time(ray_{name}{{training_job="topics"}}[10m])'
                return [float(series["value"][1]) for series in prometheus.query(query)]

            wait_until(
                lambda: all(
                    exported(name)
                    for name in (
                        "llmkube_train_step",
                        "llmkube_train_loss",
                        "llmkube_eval_loss",
                        "llmkube_train_tokens_per_second",
                    )
                ),
                timeout=30,
                what="Prometheus to hold the training gauges",
            )
            assert 0 < exported("llmkube_train_step")[0] <= 200
    store = store_for(config, minio)
    records = metrics(store, config.output)
    evaluations = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evaluations] == [0, 100, 200]
    initial, final = evaluations[0]["eval_loss"], evaluations[-1]["eval_loss"]
    assert final < 0.75 * initial, (initial, final)
    assert evaluations[-1]["samples"][0]["prompt"] == "The "
    assert progress(store, config.output)["step"] == 200  # type: ignore[index]
    assert [step for step, _ in complete_checkpoints(store, config.output)] == [150, 200]

    model_uri = join(config.output, "model")
    first = resolve_model(store, model_uri)
    assert first.uri == join(config.output, "versions", str(first.version))
    published = json.loads(store.read_bytes(join(first.uri, EVAL_FILE)))
    assert published["eval_loss"] == pytest.approx(final)
    loaded = load_artifact(store, model_uri)
    assert loaded.tokenizer.get_vocab_size() == 512
    cache = config.dataset.cache
    assert cache is not None
    (cache_uri,) = {uri.rsplit("/", 1)[0] for uri in store.list(cache) if MANIFEST_FILE in uri}
    manifest = DataManifest.model_validate_json(store.read_bytes(join(cache_uri, MANIFEST_FILE)))
    _, validation = open_splits(store, cache_uri, manifest, 128, tmp_path)
    with torch.no_grad():
        again = evaluate(
            loaded.model, validation, batches=8, batch_size=8, device=torch.device("cpu")
        )
    assert again["eval_loss"] == pytest.approx(final, abs=1e-4)
    assert "bytes/s" in run.log
    assert "tok/s" in run.log

    # Continuing from the published model starts where it ended: same tokenizer, same
    # validation documents, so the new run's step-0 evaluation equals the published one.
    # This run also exports its model to ONNX once it is published.
    continued = config_for(
        minio,
        bucket,
        dataset,
        model={"preset": "tiny", "base": model_uri},
        training={"maxSteps": 10, "batchSize": 8, "learningRate": 1e-4},
        evaluation={"interval": 100, "batches": 8},
        export={"onnx": {"enabled": True}},
    ).model_copy(update={"output": f"s3://{bucket}/continued"})
    with TrainingProcess(continued, tmp_path / "continued", minio.env) as run:
        assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
    first_eval = next(r for r in metrics(store, continued.output) if r["kind"] == "eval")
    assert first_eval["step"] == 0
    assert first_eval["eval_loss"] == pytest.approx(final, abs=1e-4)
    check_onnx_export(store, continued, minio, monkeypatch)
    assert "max |Δlogits| against PyTorch" in run.log
    # Run again: the model and its export are there, so nothing is done twice.
    with TrainingProcess(continued, tmp_path / "continued-again", minio.env) as rerun:
        assert rerun.wait(120) == 0, rerun.log[-4000:]
    assert "already holds the export of version" in rerun.log

    # Again with the same settings: done at once. With other settings: refused, since
    # finishing would report the published model as that run's.
    with TrainingProcess(config, tmp_path / "again", minio.env) as rerun:
        assert rerun.wait(120) == 0, rerun.log[-4000:]
    assert "already published" in rerun.log
    longer = config.model_copy(
        update={"training": config.training.model_copy(update={"max_steps": 400})}
    )
    with TrainingProcess(longer, tmp_path / "longer", minio.env) as refused:
        assert refused.wait(120) == 2, refused.log[-4000:]
    assert "already holds a model published by a run with other settings" in refused.log
    assert "training.maxSteps: 200 -> 400" in refused.log

    # Unless the job says to start over: the old run's checkpoints go, its model stays as a
    # version, and model/ moves to the new one.
    restarted = config.model_copy(
        update={
            "training": config.training.model_copy(update={"max_steps": 30}),
            "restart_policy": "restart",
        }
    )
    with TrainingProcess(restarted, tmp_path / "restarted", minio.env) as restart:
        assert restart.wait(RUN_TIMEOUT) == 0, restart.log[-4000:]
    assert "deleted its checkpoints" in restart.log
    second = resolve_model(store, model_uri)
    assert second.version not in (None, first.version)
    assert json.loads(store.read_bytes(join(second.uri, EVAL_FILE)))["step"] == 30
    assert store.exists(join(first.uri, "model.safetensors"))
    assert all(step <= 30 for step, _ in complete_checkpoints(store, config.output))


def test_a_killed_worker_resumes_from_the_last_checkpoint(
    minio: MinioServer, bucket: str, dataset: str, tmp_path: Path
) -> None:
    config = config_for(
        minio, bucket, dataset, training={"maxSteps": 600, "batchSize": 8, "learningRate": 3e-3}
    )
    store = store_for(config, minio)
    with TrainingProcess(config, tmp_path, minio.env) as run:
        checkpointed = wait_for_checkpoint(store, config.output, 50, RUN_TIMEOUT, run.log_path)
        workers = run.train_workers()
        assert len(workers) == 2, run.log[-3000:]
        killed = workers[-1]
        os.kill(killed, signal.SIGKILL)
        assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
    records = metrics(store, config.output)
    resumes = [r["step"] for r in records if r["kind"] == "resume"]
    assert len(resumes) == 1, run.log[-4000:]
    assert resumes[0] >= checkpointed
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(steps), "records after the checkpoint must be redone, not duplicated"
    assert steps[-1] == 600
    assert store.exists(model_pointer_uri(config.output))


def test_a_restarted_driver_resumes_at_the_checkpointed_step(
    minio: MinioServer, bucket: str, dataset: str, tmp_path: Path
) -> None:
    config = config_for(
        minio, bucket, dataset, training={"maxSteps": 600, "batchSize": 8, "learningRate": 3e-3}
    )
    store = store_for(config, minio)
    with TrainingProcess(config, tmp_path, minio.env) as first:
        checkpointed = wait_for_checkpoint(store, config.output, 100, RUN_TIMEOUT, first.log_path)
        first.kill()
    assert not store.exists(model_pointer_uri(config.output))
    resumed_at = complete_checkpoints(store, config.output)[-1][0]
    assert resumed_at >= checkpointed

    # The same output with another model shape: refused before any Ray cluster starts.
    assert config.model is not None
    reshaped = config.model_copy(
        update={"model": config.model.model_copy(update={"n_layer": config.model.n_layer + 1})}
    )
    with TrainingProcess(reshaped, tmp_path / "reshaped", minio.env) as refused:
        assert refused.wait(120) == 2, refused.log[-4000:]
    assert f"model.nLayer: {config.model.n_layer} -> {config.model.n_layer + 1}" in refused.log
    assert complete_checkpoints(store, config.output)[-1][0] == resumed_at  # nothing lost

    with TrainingProcess(config, tmp_path, minio.env) as second:
        assert second.wait(RUN_TIMEOUT) == 0, second.log[-4000:]
    assert "already prepared" in second.log
    records = metrics(store, config.output)
    assert [r["step"] for r in records if r["kind"] == "resume"] == [resumed_at]
    after = [r["step"] for r in records if r["kind"] == "train" and r["step"] > resumed_at]
    before = [r["step"] for r in records if r["kind"] == "train" and r["step"] <= resumed_at]
    assert before
    assert after
    assert f"resuming at step {resumed_at} of 600" in second.log
    assert "step 1/600" not in second.log


def test_a_storage_outage_mid_run_is_retried_without_corruption(
    minio: MinioServer, bucket: str, dataset: str, tmp_path: Path
) -> None:
    config = config_for(
        minio, bucket, dataset, training={"maxSteps": 600, "batchSize": 8, "learningRate": 3e-3}
    )
    store = store_for(config, minio)
    with TrainingProcess(config, tmp_path, minio.env) as run:
        wait_for_checkpoint(store, config.output, 50, RUN_TIMEOUT, run.log_path)
        minio.pause()
        try:
            time.sleep(10)
        finally:
            minio.resume()
        assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
    records = metrics(store, config.output)
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(steps)
    assert steps[-1] == 600
    assert [step for step, _ in complete_checkpoints(store, config.output)] == [550, 600]
    load_artifact(store, join(config.output, "model"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_driver_shuts_ray_down_and_keeps_its_checkpoint(
    minio: MinioServer, bucket: str, dataset: str, tmp_path: Path, signum: int
) -> None:
    # TrainingProcess starts the driver with SIGINT ignored, as a script's background job would;
    # during fit, Ray Train's own SIGINT handler would abort the run and exit 0.
    config = config_for(
        minio, bucket, dataset, training={"maxSteps": 100_000, "batchSize": 8, "learningRate": 3e-3}
    )
    store = store_for(config, minio)
    with TrainingProcess(config, tmp_path, minio.env) as run:
        wait_for_checkpoint(store, config.output, 50, RUN_TIMEOUT, run.log_path)
        assert stop_by_signal(run, signum) == 128 + signum, run.log[-4000:]
    assert f"stopped by {signal.Signals(signum).name}" in run.log
    assert not store.exists(model_pointer_uri(config.output))
    step, uri = complete_checkpoints(store, config.output)[-1]
    assert load_state(store, uri).step == step
    weights = safetensors.torch.load(store.read_bytes(join(uri, WEIGHTS_FILE)))
    assert weights
    assert load_torch(store, uri, OPTIMIZER_FILE)["state"]
    assert len(load_torch(store, uri, RNG_FILE)) == 2
