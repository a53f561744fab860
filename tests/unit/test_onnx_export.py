"""ONNX export of every family llmkube trains: tiny models (≤ 200 k parameters) exported once per
module, run with ONNX Runtime and compared with PyTorch on batches of mixed lengths."""

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch

from llmkube.api.artifacts import ModelPointer, model_pointer_uri
from llmkube.api.export import (
    DECODE_GRAPH,
    EXPORT_MANIFEST_FILE,
    NEWEST_OPSET,
    ONNX_TOKENIZER_FILE,
    PARITY_BOUNDS,
    PREFILL_GRAPH,
    ExportManifest,
    OnnxExportSpec,
)
from llmkube.api.runconfig import GptConfig, StorageConfig
from llmkube.runtime.export import exporting, memory
from llmkube.runtime.export.errors import ExportError
from llmkube.runtime.export.exporting import export_onnx
from llmkube.runtime.export.graphs import decoder_graph
from llmkube.runtime.export.memory import memory_problem, weights_in_memory
from llmkube.runtime.export.onnx_runner import OnnxDecoder, generate_onnx, open_export
from llmkube.runtime.models import CausalLM, build_model
from llmkube.runtime.sampling import SamplingParams, generate
from llmkube.runtime.serving.served_model import load_model
from llmkube.storage.models import ModelFolder, folder_digest
from llmkube.storage.store import LocalStore
from llmkube.testing.models import publish_byte_model, publish_untrained_gpt
from llmkube.testing.pretrained import publish_adapter, upload_folder, write_tiny_model
from tests.commands import llmkube

ROOT = Path(__file__).parents[2]
STORAGE = StorageConfig()
ARCHITECTURES = ("gpt", "llama-lora", "qwen2", "gpt2")
"""llama is exported as a LoRA adapter merged into its base: a llama graph either way."""


def _source(root: Path, architecture: str) -> str:
    store = LocalStore()
    uri = f"file://{root}/{architecture}"
    if architecture == "gpt":
        config = GptConfig(
            n_layer=2, n_head=2, d_model=64, context_length=64, dropout=0.0, vocab_size=256
        )
        return publish_untrained_gpt(store, uri, config)
    if architecture == "llama-lora":
        base_uri = upload_folder(
            store, f"file://{root}/llama", write_tiny_model(root / "llama-files", "llama")
        )
        return publish_adapter(
            store,
            uri,
            base_folder=root / "llama-files",
            base_uri=base_uri,
            base_digest=folder_digest(store, base_uri),
        )
    return upload_folder(store, uri, write_tiny_model(root / f"{architecture}-files", architecture))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, ExportManifest]]:
    """Each family's source URI and its export (gpt2's at the newest opset ONNX Runtime runs)."""
    root = tmp_path_factory.mktemp("onnx")
    found = {}
    for architecture in ARCHITECTURES:
        source = _source(root, architecture)
        opset = NEWEST_OPSET if architecture == "gpt2" else 18
        manifest = export_onnx(
            source, f"{source}-onnx", STORAGE, OnnxExportSpec(enabled=True, opset=opset)
        )
        found[architecture] = (source, manifest)
    return found


def _pytorch(source: str) -> CausalLM:
    model = load_model(source, STORAGE, "cpu", name="m", max_lora_rank=64).model
    return model.eval()


def test_pinned_versions_are_the_ones_installed() -> None:
    # The exporter's output and the opsets ONNX Runtime runs change between minors (the opset
    # bounds below hold for these versions).
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package in ("onnx", "onnxscript", "onnxruntime"):
        assert f'"{package}=={version(package)}"' in pyproject


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_family_exports_within_the_parity_bound(
    exported: dict[str, tuple[str, ExportManifest]], architecture: str
) -> None:
    source, manifest = exported[architecture]
    folder = Path(source.removeprefix("file://") + "-onnx")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [DECODE_GRAPH, EXPORT_MANIFEST_FILE, ONNX_TOKENIZER_FILE, PREFILL_GRAPH]
    )
    assert ExportManifest.model_validate_json((folder / EXPORT_MANIFEST_FILE).read_bytes())
    parity = manifest.parity
    assert parity.bound == PARITY_BOUNDS["float32"] == 1e-3
    assert parity.prompt_lengths == [1, 17, 5]
    assert parity.decode_steps == 4
    assert 0 < parity.prefill_max_abs_diff < 1e-4, parity
    assert 0 < parity.decode_max_abs_diff < 1e-4, parity
    assert manifest.merged_adapter == (architecture == "llama-lora")
    assert manifest.architecture == architecture.removesuffix("-lora")
    # Batch and lengths are named axes, the layer count and widths fixed.
    names = {io.name: io.shape for io in manifest.decode.inputs}
    assert names["input_ids"] == ["batch", 1]
    assert names["attention_mask"][0] == "batch"
    assert names["past.0.key"] == ["batch", manifest.kv_heads, "past", manifest.head_dim]
    assert len(manifest.decode.outputs) == 1 + 2 * manifest.layers
    prefill = {io.name: io.shape for io in manifest.prefill.inputs}
    assert prefill["input_ids"] == ["batch", "sequence"]


@pytest.mark.parametrize("architecture", ["gpt", "qwen2"])
@pytest.mark.parametrize(("batch", "length"), [(1, 1), (1, 17), (3, 17)])
def test_shapes_are_dynamic(
    exported: dict[str, tuple[str, ExportManifest]], architecture: str, batch: int, length: int
) -> None:
    source, manifest = exported[architecture]
    decoder = OnnxDecoder(Path(source.removeprefix("file://") + "-onnx"), manifest.layers)
    model = _pytorch(source)
    ids = torch.randint(0, manifest.vocab_size, (batch, length + 1))
    step = decoder.prefill(ids[:, :length].numpy(), np.ones((batch, length), dtype=np.int64))
    after = decoder.decode(
        ids[:, length:].numpy(), np.ones((batch, length + 1), dtype=np.int64), step.present
    )
    with torch.inference_mode():
        expected = model(ids)
    assert np.abs(step.logits - expected[:, :length].numpy()).max() < 1e-3
    assert np.abs(after.logits[:, 0] - expected[:, length].numpy()).max() < 1e-3
    assert after.present[0].shape == (batch, manifest.kv_heads, length + 1, manifest.head_dim)


def test_a_merged_adapter_changes_the_base_model(
    exported: dict[str, tuple[str, ExportManifest]], tmp_path: Path
) -> None:
    source, manifest = exported["llama-lora"]
    decoder = OnnxDecoder(Path(source.removeprefix("file://") + "-onnx"), manifest.layers)
    ids = np.array([[5, 6, 7]], dtype=np.int64)
    adapted = decoder.prefill(ids, np.ones_like(ids)).logits
    with torch.inference_mode():
        base = _pytorch(manifest.source.replace("llama-lora", "llama"))(torch.from_numpy(ids))
    assert np.abs(adapted - base.numpy()).max() > 1e-2


def test_onnx_generation_matches_pytorch_on_a_trained_model(tmp_path: Path) -> None:
    # A trained model: its greedy picks are clear, unlike a random model's near-ties.
    source = f"file://{tmp_path}/model"
    publish_byte_model(LocalStore(), source, context_length=128, steps=150)
    export_onnx(source, f"file://{tmp_path}/onnx", STORAGE, OnnxExportSpec(enabled=True))
    opened = open_export(f"file://{tmp_path}/onnx", STORAGE)
    model = _pytorch(source)
    prompt = opened.codec.encode("The ")
    greedy = SamplingParams(temperature=0.0)
    expected = generate(model, prompt, 24, greedy)
    assert generate_onnx(opened.decoder, opened.manifest, prompt, 24, greedy) == expected
    sampled = SamplingParams(temperature=0.8, top_k=40)
    assert generate_onnx(opened.decoder, opened.manifest, prompt, 24, sampled, seed=7) == (
        generate(model, prompt, 24, sampled, seed=7)
    )
    # The CLI says the same, and refuses to guess which model is meant.
    result = llmkube("generate", "--onnx", f"file://{tmp_path}/onnx", "The ", "--temperature", "0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The " + opened.codec.decode(expected[:4]))
    both = llmkube("generate", "--onnx", "file:///x", "--model", "file:///y", "hi")
    assert both.returncode == 2
    assert "exactly one of --model and --onnx" in both.stderr
    missing = llmkube("generate", "--onnx", f"file://{tmp_path}/model", "hi")
    assert missing.returncode == 2
    assert "no complete ONNX export" in missing.stderr


def test_a_failed_parity_check_writes_nothing(
    exported: dict[str, tuple[str, ExportManifest]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No export differs by 0 exactly; a bound of 0 fails as a broken graph would.
    monkeypatch.setitem(PARITY_BOUNDS, "float32", 0.0)
    source, _ = exported["gpt"]
    with pytest.raises(ExportError, match=r"differ from the PyTorch model by more than 0: .*"):
        export_onnx(source, f"file://{tmp_path}/out", STORAGE, OnnxExportSpec(enabled=True))
    assert not (tmp_path / "out").exists()
    # Over an earlier export: that one stays whole, export.json included.
    earlier = Path(source.removeprefix("file://") + "-onnx")
    before = {path.name: path.read_bytes() for path in earlier.iterdir()}
    with pytest.raises(ExportError, match="differ from the PyTorch model"):
        export_onnx(source, f"{source}-onnx", STORAGE, OnnxExportSpec(enabled=True))
    assert {path.name: path.read_bytes() for path in earlier.iterdir()} == before


def test_a_destination_holding_other_files_is_refused(
    exported: dict[str, tuple[str, ExportManifest]],
) -> None:
    source, _ = exported["gpt"]
    with pytest.raises(
        ExportError, match=r"holds files that are not part of an ONNX export \(card"
    ):
        export_onnx(source, source, STORAGE, OnnxExportSpec(enabled=True))


def test_an_opset_onnx_runtime_cannot_run_is_refused(tmp_path: Path) -> None:
    # The upper bound of OnnxExportSpec.opset: the exporter writes opset 26, ONNX Runtime 1.31
    # refuses to load it.
    config = GptConfig(
        n_layer=1, n_head=2, d_model=16, context_length=16, dropout=0.0, vocab_size=32
    )
    graph = decoder_graph(build_model(config).eval())
    exporting.trace_graph(graph, tmp_path / "g.onnx", decode=False, opset=NEWEST_OPSET + 1)
    with pytest.raises(ExportError, match=r"ONNX Runtime cannot load g\.onnx"):
        exporting.graph_record(tmp_path / "g.onnx")
    result = llmkube("export", "onnx", "file:///x/model", "--opset", str(NEWEST_OPSET + 1))
    assert result.returncode == 2
    assert "--opset" in result.stderr


def test_unsupported_architectures_are_refused_before_loading(tmp_path: Path) -> None:
    folder = tmp_path / "mistral"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    result = llmkube("export", "onnx", f"file://{folder}")
    assert result.returncode == 2
    assert "is a mistral model; llmkube exports its GPT and gpt2, llama, qwen2" in result.stderr
    assert not (tmp_path / "mistral-onnx").exists()


def test_a_model_larger_than_memory_is_refused_with_the_figures() -> None:
    assert memory_problem(2 * 2**30, 64 * 2**30) is None
    problem = memory_problem(6 * 2**30, 16 * 2**30)
    assert problem is not None
    assert "needs about 24.0 GiB (4 copies of 6.0 GiB of fp32 weights) but 16.0 GiB" in problem


def test_the_cli_exports_next_to_a_jobs_model(tmp_path: Path) -> None:
    output = tmp_path / "job"
    publish_byte_model(LocalStore(), f"file://{output}/versions/v1", context_length=32, steps=1)
    pointer = ModelPointer(version="v1", run="r", published_at="2026-11-30T00:00:00Z")
    LocalStore().write_bytes(
        model_pointer_uri(f"file://{output}"), pointer.model_dump_json().encode()
    )
    result = llmkube("export", "onnx", f"file://{output}/model", "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    assert "✓ exported gpt (2 layers, opset 18, float16)" in result.stdout
    manifest = ExportManifest.model_validate_json((output / "onnx" / "export.json").read_bytes())
    assert (manifest.source_version, manifest.dtype) == ("v1", "float16")
    assert manifest.parity.bound == 5e-2
    # Again in float32: the earlier export is replaced.
    again = llmkube("export", "onnx", f"file://{output}/model")
    assert again.returncode == 0, again.stderr
    replaced = ExportManifest.model_validate_json((output / "onnx" / "export.json").read_bytes())
    assert (replaced.dtype, replaced.parity.bound) == ("float32", 1e-3)
    assert "checking parity with ONNX Runtime" in result.stderr


def test_the_documented_loop_runs_an_export_with_onnx_runtime_alone(
    exported: dict[str, tuple[str, ExportManifest]], tmp_path: Path
) -> None:
    # docs/export.md shows how to use an export without llmkube; it must keep working.
    text = (ROOT / "docs" / "export.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    source, _ = exported["gpt"]
    (tmp_path / "onnx").symlink_to(Path(source.removeprefix("file://") + "-onnx"))
    result = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    opened = open_export(f"{source}-onnx", STORAGE)
    ids = generate_onnx(opened.decoder, opened.manifest, opened.codec.encode("def fib(n):"), 32)
    assert result.stdout == opened.codec.decode(ids) + "\n"


def test_the_memory_check_comes_before_anything_is_loaded(
    exported: dict[str, tuple[str, ExportManifest]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The machine's free memory is what this test cannot choose: it stands in for it.
    monkeypatch.setattr(memory, "available_memory", lambda: 2**20)

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the memory check")

    monkeypatch.setattr(exporting, "load_model", must_not_load)
    source, _ = exported["qwen2"]
    with pytest.raises(ExportError, match=r"exporting needs about .* but 0\.0 GiB is available"):
        export_onnx(source, f"file://{tmp_path}/out", STORAGE, OnnxExportSpec(enabled=True))
    assert not (tmp_path / "out").exists()


def test_weights_stored_in_half_precision_count_double_once_loaded(tmp_path: Path) -> None:
    store = LocalStore()
    for name, dtype in (("half", "bfloat16"), ("full", "float32")):
        store.write_bytes(f"file://{tmp_path}/{name}/model.safetensors", b"x" * 1000)
        store.write_bytes(
            f"file://{tmp_path}/{name}/config.json",
            json.dumps({"model_type": "llama", "dtype": dtype}).encode(),
        )
    folders = [
        ModelFolder(f"file://{tmp_path}/{name}", "huggingface", "llama")
        for name in ("half", "full")
    ]
    assert weights_in_memory(store, folders[:1]) == 2000
    assert weights_in_memory(store, folders) == 3000
