"""Fine-tuning pretrained models for real: tiny random-init Llama, Qwen2 and GPT-2 folders in
MinIO, the sample chat dataset, a local Ray cluster with 2 workers, and the published folder
loaded back with transformers and peft."""

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from transformers import AutoModelForCausalLM

from llmkube.api.artifacts import MODEL_RECORD_FILE, ModelRecord, model_pointer_uri
from llmkube.api.export import EXPORT_MANIFEST_FILE, ExportManifest
from llmkube.api.runconfig import StorageConfig, TrainingRunConfig
from llmkube.local.sample import chat_examples
from llmkube.runtime.data.manifest import MANIFEST_FILE, DataManifest
from llmkube.runtime.data.shards import open_splits
from llmkube.runtime.export.onnx_runner import OnnxDecoder
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import HuggingFaceLM, check_model_config
from llmkube.runtime.models.local_copy import MODEL_CACHE_ENV, local_model_folder
from llmkube.runtime.training.checkpoint import complete_checkpoints
from llmkube.runtime.training.evaluate import evaluate
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import resolve_model
from llmkube.testing.minio import MinioServer
from llmkube.testing.pretrained import CHATML, write_tiny_model
from llmkube.testing.training import TrainingProcess
from tests.runtime.training_helpers import (
    metrics,
    run_config,
    store_for,
    upload,
    wait_for_checkpoint,
)

RUN_TIMEOUT = 300.0
CONTEXT = 128


def upload_folder(minio: MinioServer, bucket: str, prefix: str, folder: Path) -> str:
    for path in sorted(folder.iterdir()):
        upload(minio, bucket, f"{prefix}/{path.name}", path.read_bytes())
    return f"s3://{bucket}/{prefix}"


def download_folder(store: ObjectStore, uri: str, folder: Path) -> Path:
    prefix = resolve_model(store, uri).uri + "/"
    for listed in store.list(prefix):
        path = folder / listed.removeprefix(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read_bytes(listed))
    return folder


def chat_lines() -> bytes:
    return "\n".join(json.dumps(example) for example in chat_examples()).encode()


def instruction_lines() -> bytes:
    records = [
        {
            "prompt": f"Question: {e['messages'][0]['content']}\nAnswer: ",
            "completion": e["messages"][1]["content"],
        }
        for e in chat_examples()
    ]
    return "\n".join(json.dumps(record) for record in records).encode()


def finetune_config(
    minio: MinioServer, bucket: str, model_uri: str, **spec: Any
) -> TrainingRunConfig:
    """A 2-worker fine-tune of `model_uri`; `spec` entries replace whole spec sections (dataset
    is required)."""
    defaults: dict[str, Any] = {
        "model": {"pretrained": {"uri": model_uri}, "overrides": {"contextLength": CONTEXT}},
        "tokenizer": None,
        "training": {"maxSteps": 40, "batchSize": 4, "learningRate": 3e-3},
        "evaluation": {"interval": 20, "batches": 4},
        "checkpoint": {"interval": 10, "keep": 2},
    }
    config = run_config(
        "finetune",
        source=spec["dataset"]["source"],
        output=f"s3://{bucket}/out/",
        endpoint=minio.endpoint,
        spec={**defaults, **spec},
    )
    return config


def evaluate_published(
    store: ObjectStore,
    config: TrainingRunConfig,
    model: torch.nn.Module,
    base: Path,
    tmp_path: Path,
) -> float:
    """The published model's loss on the job's own validation examples."""
    cache = config.dataset.cache
    assert cache is not None
    (cache_uri,) = {uri.rsplit("/", 1)[0] for uri in store.list(cache) if MANIFEST_FILE in uri}
    manifest = DataManifest.model_validate_json(store.read_bytes(join(cache_uri, MANIFEST_FILE)))
    shards = tmp_path / "shards"
    shards.mkdir(exist_ok=True)
    _, validation = open_splits(store, cache_uri, manifest, CONTEXT, shards)
    summary = check_model_config(json.loads((base / "config.json").read_text()), str(base))
    wrapped = HuggingFaceLM(model, summary).eval()
    with torch.no_grad():
        result = evaluate(wrapped, validation, batches=4, batch_size=4, device=torch.device("cpu"))
    return result["eval_loss"]


@pytest.fixture
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    return {name: write_tiny_model(root / name, name) for name in ("llama", "qwen2")}


def test_lora_on_chat_data_publishes_an_adapter_peft_loads(
    minio: MinioServer, bucket: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model_uri = upload_folder(minio, bucket, "models/tiny-llama", tiny_models["llama"])
    # Two bad records among the good ones, skipped as the spec allows.
    upload(minio, bucket, "chat/examples.jsonl", b'{"messages": []}\n[1]\n' + chat_lines())
    config = finetune_config(
        minio,
        bucket,
        model_uri,
        dataset={
            "source": f"s3://{bucket}/chat/",
            "format": "chat",
            "skipInvalidRecords": True,
        },
        finetune={"method": "lora", "lora": {"rank": 8}, "mergeOnPublish": True},
        evaluation={"interval": 20, "batches": 4, "samplePrompts": ["What is a list?"]},
        export={"onnx": {"enabled": True}},
    )
    store = store_for(config, minio)
    with TrainingProcess(config, tmp_path, minio.env) as run:
        assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
    assert "7,168 trainable" in run.log
    assert "skipping 2 of 230 records" in run.log
    assert "examples.jsonl line 2: not a JSON object" in run.log
    evaluations = [r for r in metrics(store, config.output) if r["kind"] == "eval"]
    assert [r["step"] for r in evaluations] == [0, 20, 40]
    assert evaluations[-1]["eval_loss"] < evaluations[0]["eval_loss"]
    assert evaluations[-1]["samples"][0]["prompt"] == "What is a list?"

    published = download_folder(store, join(config.output, "model"), tmp_path / "published")
    record = ModelRecord.model_validate_json((published / MODEL_RECORD_FILE).read_text())
    assert (record.format, record.architecture, record.merged) == ("lora", "llama", "merged")
    assert record.base is not None
    assert record.base.uri == model_uri
    assert not (published / "config.json").exists()
    adapter = json.loads((published / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == model_uri
    final = json.loads((published / "eval.json").read_text())["eval_loss"]
    assert final == pytest.approx(evaluations[-1]["eval_loss"])

    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with_adapter = peft.PeftModel.from_pretrained(base, published)
    assert evaluate_published(
        store, config, with_adapter, tiny_models["llama"], tmp_path
    ) == pytest.approx(final, abs=1e-4)
    merged = AutoModelForCausalLM.from_pretrained(published / "merged")
    assert evaluate_published(
        store, config, merged, tiny_models["llama"], tmp_path
    ) == pytest.approx(final, abs=1e-3)

    # spec.export.onnx: the adapter merged into its base, as one llama graph pair.
    exported = download_folder(store, join(config.output, "onnx"), tmp_path / "onnx")
    manifest = ExportManifest.model_validate_json((exported / EXPORT_MANIFEST_FILE).read_text())
    assert (manifest.architecture, manifest.merged_adapter) == ("llama", True)
    assert manifest.source_version == resolve_model(store, join(config.output, "model")).version
    assert max(manifest.parity.prefill_max_abs_diff, manifest.parity.decode_max_abs_diff) < 1e-3
    ids = torch.tensor([[5, 17, 42, 7]])
    with torch.no_grad():
        expected = merged(input_ids=ids).logits.numpy()
    step = OnnxDecoder(exported, manifest.layers).prefill(ids.numpy(), torch.ones_like(ids).numpy())
    assert float(abs(step.logits - expected).max()) < 1e-3


def test_full_fine_tune_on_instructions_publishes_a_model_transformers_loads(
    minio: MinioServer, bucket: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model_uri = upload_folder(minio, bucket, "models/tiny-qwen2", tiny_models["qwen2"])
    upload(minio, bucket, "instructions/a.jsonl", instruction_lines())
    config = finetune_config(
        minio,
        bucket,
        model_uri,
        dataset={
            "source": f"s3://{bucket}/instructions/",
            "format": "instruction",
            "packing": True,
        },
        finetune={"method": "full"},
        training={
            "maxSteps": 40,
            "batchSize": 4,
            "learningRate": 3e-3,
            "gradientCheckpointing": True,
        },
    )
    store = store_for(config, minio)
    with TrainingProcess(config, tmp_path, minio.env) as run:
        assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
    evaluations = [r for r in metrics(store, config.output) if r["kind"] == "eval"]
    # With activation checkpointing on, as configured: the loss still falls.
    assert evaluations[-1]["eval_loss"] < 0.9 * evaluations[0]["eval_loss"]
    published = download_folder(store, join(config.output, "model"), tmp_path / "published")
    record = ModelRecord.model_validate_json((published / MODEL_RECORD_FILE).read_text())
    assert record.format == "huggingface"
    assert record.trainable_parameters == record.parameters
    model = AutoModelForCausalLM.from_pretrained(published)
    final = json.loads((published / "eval.json").read_text())["eval_loss"]
    assert evaluate_published(
        store, config, model, tiny_models["qwen2"], tmp_path
    ) == pytest.approx(final, abs=1e-4)


def test_a_killed_worker_resumes_a_lora_run_from_its_adapter_checkpoint(
    minio: MinioServer, bucket: str, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model_uri = upload_folder(minio, bucket, "models/tiny-llama", tiny_models["llama"])
    upload(minio, bucket, "chat/examples.jsonl", chat_lines())
    config = finetune_config(
        minio,
        bucket,
        model_uri,
        dataset={"source": f"s3://{bucket}/chat/", "format": "chat"},
        training={"maxSteps": 120, "batchSize": 4, "learningRate": 3e-3},
        evaluation={"interval": 120, "batches": 2},
    )
    store = store_for(config, minio)
    with TrainingProcess(config, tmp_path, minio.env) as run:
        checkpointed = wait_for_checkpoint(store, config.output, 20, RUN_TIMEOUT, run.log_path)
        workers = run.train_workers()
        assert len(workers) == 2, run.log[-3000:]
        os.kill(workers[-1], signal.SIGKILL)
        assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
    records = metrics(store, config.output)
    resumes = [r["step"] for r in records if r["kind"] == "resume"]
    assert len(resumes) == 1, run.log[-4000:]
    assert resumes[0] >= checkpointed
    # A LoRA checkpoint holds the adapters alone: tiny next to the model.
    newest = complete_checkpoints(store, config.output)[-1][1]
    assert len(store.read_bytes(join(newest, "model.safetensors"))) < 64 * 1024
    assert store.exists(model_pointer_uri(config.output))


def test_each_machine_copies_a_model_once_and_again_only_what_changed(
    minio: MinioServer,
    bucket: str,
    tiny_models: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "cache"))
    model_uri = upload_folder(minio, bucket, "models/tiny-llama", tiny_models["llama"])
    upload(minio, bucket, "models/tiny-llama/notes.md", b"first")
    store = open_store(
        model_uri, StorageConfig(endpoint=minio.endpoint, insecure=True), environ=minio.env
    )
    folder = local_model_folder(store, model_uri)
    weights = folder / "model.safetensors"
    assert weights.read_bytes() == (tiny_models["llama"] / "model.safetensors").read_bytes()
    copied_at = weights.stat().st_mtime_ns

    upload(minio, bucket, "models/tiny-llama/notes.md", b"second")
    minio.client().remove_object(bucket, "models/tiny-llama/generation_config.json")
    assert local_model_folder(store, model_uri) == folder
    assert weights.stat().st_mtime_ns == copied_at, "an unchanged file is not fetched again"
    assert (folder / "notes.md").read_text() == "second"
    assert not (folder / "generation_config.json").exists()

    minio.client().remove_object(bucket, "models/tiny-llama/model.safetensors")
    with pytest.raises(ModelError, match=r"has no \*.safetensors weights"):
        local_model_folder(store, model_uri)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        ("no-weights", "has no \\*.safetensors weights"),
        ("no-template", "needs a tokenizer with a chat template"),
        ("rank", "rank 64 is larger than the narrowest adapted layer"),
        ("context", "contextLength 512 is above what"),
        ("records", r"2 of 230 records in s3://\S+ are invalid:\n  examples.jsonl line 1: "),
    ],
)
def test_a_fine_tune_that_cannot_work_exits_2_naming_what_to_change(
    minio: MinioServer,
    bucket: str,
    tmp_path: Path,
    break_it: str,
    message: str,
) -> None:
    folder = write_tiny_model(
        tmp_path / "model", "llama", chat_template=None if break_it == "no-template" else CHATML
    )
    if break_it == "no-weights":
        (folder / "model.safetensors").unlink()
    model_uri = upload_folder(minio, bucket, "models/broken", folder)
    broken_lines = b'{"messages": []}\n{"prompt": "x"}\n' if break_it == "records" else b""
    upload(minio, bucket, "chat/examples.jsonl", broken_lines + chat_lines())
    config = finetune_config(
        minio,
        bucket,
        model_uri,
        dataset={"source": f"s3://{bucket}/chat/", "format": "chat"},
        finetune={"lora": {"rank": 64 if break_it == "rank" else 8}},
        model={
            "pretrained": {"uri": model_uri},
            "overrides": {"contextLength": 512 if break_it == "context" else CONTEXT},
        },
    )
    with TrainingProcess(config, tmp_path, minio.env) as run:
        assert run.wait(RUN_TIMEOUT) == 2, run.log[-4000:]
    assert re.search(message, run.log), run.log[-4000:]
    assert "Traceback" not in run.log
