"""What a model folder is, read from storage without loading it, and whether an adapter fits a
base (llmkube/storage/models.py): what serving and the operator decide by."""

import json
from pathlib import Path

import pytest

from llmkube.api.artifacts import MODEL_RECORD_FILE, BaseModelRecord, ModelRecord
from llmkube.storage import NotFoundError, open_store
from llmkube.storage.models import NotAModelError, adapter_problem, folder_digest, inspect_model

BASE = "s3://models/base"
DIGEST = "sha256:" + "a" * 64


def _write(folder: Path, files: dict[str, object]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content))
    return f"file://{folder}"


def _adapter(folder: Path, *, rank: int = 8, digest: str | None = DIGEST, base: str = BASE) -> str:
    files: dict[str, object] = {
        "adapter_config.json": {"peft_type": "LORA", "r": rank, "base_model_name_or_path": base}
    }
    if digest is not None:
        record = ModelRecord(
            format="lora",
            architecture="llama",
            parameters=1,
            trainable_parameters=1,
            base=BaseModelRecord(uri=base, digest=digest),
        )
        files[MODEL_RECORD_FILE] = json.loads(record.model_dump_json())
    return _write(folder, files)


def test_each_format_is_recognised(tmp_path: Path) -> None:
    store = open_store("file://")
    gpt = _write(tmp_path / "gpt", {"config.json": {"architecture": "gpt"}})
    hf = _write(tmp_path / "hf", {"config.json": {"model_type": "qwen2"}})
    lora = _adapter(tmp_path / "lora", rank=4)
    assert (inspect_model(store, gpt).format, inspect_model(store, hf).architecture) == (
        "gpt",
        "qwen2",
    )
    found = inspect_model(store, lora)
    assert (found.format, found.base_uri, found.base_digest, found.rank) == (
        "lora",
        BASE,
        DIGEST,
        4,
    )
    with pytest.raises(NotFoundError, match="no model at"):
        inspect_model(store, f"file://{tmp_path}/nothing")
    other = _write(tmp_path / "ia3", {"adapter_config.json": {"peft_type": "IA3"}})
    with pytest.raises(NotAModelError, match="IA3 adapter; llmkube serves LoRA adapters"):
        inspect_model(store, other)
    local = _write(
        tmp_path / "local",
        {"adapter_config.json": {"peft_type": "LORA", "base_model_name_or_path": "/home/me/m"}},
    )
    with pytest.raises(NotAModelError, match="set it to the base model's URI"):
        inspect_model(store, local)


@pytest.mark.parametrize(
    ("rank", "digest", "base", "problem"),
    [
        (8, DIGEST, BASE, None),
        (8, None, BASE, None),  # an adapter from elsewhere: the URI must match
        (8, None, "s3://models/other", "was trained on s3://models/other"),
        (8, "sha256:" + "b" * 64, BASE, "Serve the base it was trained on, or retrain"),
        (128, DIGEST, BASE, "rank 128, above serving.maxLoraRank 64"),
    ],
)
def test_an_adapter_fits_its_base_only(
    tmp_path: Path, rank: int, digest: str | None, base: str, problem: str | None
) -> None:
    adapter = inspect_model(
        open_store("file://"), _adapter(tmp_path / "a", rank=rank, digest=digest, base=base)
    )
    found = adapter_problem(adapter, base_uri=BASE, base_digest=DIGEST, max_rank=64)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_the_digest_changes_with_any_file(tmp_path: Path) -> None:
    store = open_store("file://")
    uri = _write(tmp_path / "m", {"config.json": {"model_type": "llama"}})
    before = folder_digest(store, uri)
    assert folder_digest(store, uri) == before
    (tmp_path / "m" / "model.safetensors").write_bytes(b"weights")
    assert folder_digest(store, uri) != before
