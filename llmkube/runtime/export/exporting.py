"""`llmkube export onnx` and a training job's `spec.export.onnx`: the published model as two ONNX
graphs with an explicit KV cache, checked against PyTorch before anything is written.

The folder is assembled locally and uploaded only once the parity check passed, export.json
last; an earlier export at the same place loses its export.json before any file is replaced, so
a reader never takes a half-written folder for a complete one."""

import logging
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim

from llmkube.api.export import (
    DECODE_GRAPH,
    EXPORT_MANIFEST_FILE,
    ONNX_TOKENIZER_FILE,
    PARITY_BOUNDS,
    PREFILL_GRAPH,
    ExportManifest,
    GraphIO,
    GraphRecord,
    OnnxExportSpec,
)
from llmkube.api.runconfig import StorageConfig
from llmkube.runtime.export.errors import ExportError
from llmkube.runtime.export.graphs import DecoderGraph, decoder_graph, past_names
from llmkube.runtime.export.memory import check_memory, weights_in_memory
from llmkube.runtime.export.onnx_runner import OnnxDecoder, session
from llmkube.runtime.export.parity import check_parity
from llmkube.runtime.models.huggingface import ARCHITECTURES, HuggingFaceLM
from llmkube.runtime.serving.served_model import ServedModel, load_model
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.models import ModelFolder, inspect_model
from llmkube.storage.uri import join

log = logging.getLogger("llmkube.export")
# The exporter logs every graph rewrite at INFO and every torchvision operator it skips as a
# warning: that buries the export's own progress lines.
for _chatty in ("onnx_ir", "onnxscript", "torch.onnx"):
    logging.getLogger(_chatty).setLevel(logging.ERROR)

LARGEST_LORA_RANK = 1024
"""LoraSpec's bound: an adapter any LLMTrainingJob trained loads for its export."""
EXPORT_FILES = {PREFILL_GRAPH, DECODE_GRAPH, ONNX_TOKENIZER_FILE, EXPORT_MANIFEST_FILE}
EXAMPLE_BATCH, EXAMPLE_LENGTH = 2, 5
"""Tracing inputs; neither may be 0 or 1, which torch.export would take for fixed sizes."""


def _check_architecture(found: ModelFolder) -> None:
    if found.format == "gpt" or found.architecture in ARCHITECTURES:
        return
    raise ExportError(
        f"{found.uri} is a {found.architecture} model; llmkube exports its GPT and "
        + ", ".join(sorted(ARCHITECTURES))
    )


def _load(found: ModelFolder, storage: StorageConfig, dtype: str) -> ServedModel:
    served = load_model(found.uri, storage, "cpu", name="export", max_lora_rank=LARGEST_LORA_RANK)
    if isinstance(served.model, HuggingFaceLM) and found.format == "lora":
        served.model.merge_adapters()
    if dtype == "float16":
        served.model.half()
    served.model.eval()
    return served


def trace_graph(graph: DecoderGraph, path: Path, *, decode: bool, opset: int) -> None:
    layout = graph.layout
    parameter = next(graph.parameters())
    batch = Dim("batch")
    ids = torch.zeros((EXAMPLE_BATCH, 1 if decode else EXAMPLE_LENGTH), dtype=torch.int64)
    if decode:
        past_length = Dim("past")
        shape = (EXAMPLE_BATCH, layout.kv_heads, EXAMPLE_LENGTH, layout.head_dim)
        past = [torch.zeros(shape, dtype=parameter.dtype) for _ in range(2 * layout.layers)]
        mask = torch.ones((EXAMPLE_BATCH, EXAMPLE_LENGTH + 1), dtype=torch.int64)
        dynamic = {
            "input_ids": {0: batch},
            "attention_mask": {0: batch, 1: past_length + 1},
            "past": tuple({0: batch, 2: past_length} for _ in past),
        }
    else:
        length = Dim("sequence")
        past, mask = [], torch.ones_like(ids)
        dynamic = {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}}
    try:
        with warnings.catch_warnings():
            # Axis names repeated across inputs are the point (one batch, one past length).
            warnings.filterwarnings("ignore", message="# The axis name")
            program = torch.onnx.export(
                graph,
                (ids, mask, *past),
                dynamo=True,
                opset_version=opset,
                input_names=["input_ids", "attention_mask", *past_names(layout.layers, "past")],
                output_names=["logits", *past_names(layout.layers, "present")],
                dynamic_shapes=dynamic,
                verbose=False,
            )
            assert program is not None
            program.save(str(path))
    except Exception as error:  # torch.export and onnxscript raise many kinds; say which step
        raise ExportError(f"torch.onnx could not export the {path.stem} graph: {error}") from error


def graph_record(path: Path) -> GraphRecord:
    """The graph's inputs and outputs as ONNX Runtime sees them; an ExportError when it cannot
    load the graph (an opset it does not run)."""
    try:
        loaded = session(path)
    except Exception as error:  # onnxruntime raises its own (untyped) errors on load
        raise ExportError(f"ONNX Runtime cannot load {path.name}: {error}") from error

    def io(items: list[Any]) -> list[GraphIO]:
        return [GraphIO(name=item.name, shape=list(item.shape), dtype=item.type) for item in items]

    return GraphRecord(
        file=path.name, inputs=io(loaded.get_inputs()), outputs=io(loaded.get_outputs())
    )


def _is_export_file(name: str) -> bool:
    return name in EXPORT_FILES or name.endswith(".onnx.data")


def check_destination(store: ObjectStore, out_uri: str) -> None:
    """Refuse a destination holding anything but an earlier (maybe half-written) export: its
    files are replaced, and nothing else may be lost."""
    prefix = out_uri.rstrip("/") + "/"
    foreign = sorted(
        name
        for name in (uri.removeprefix(prefix) for uri in store.list(prefix))
        if not _is_export_file(name)
    )
    if foreign:
        raise ExportError(
            f"{out_uri} holds files that are not part of an ONNX export ({', '.join(foreign[:3])}"
            f"{', …' if len(foreign) > 3 else ''}); export to an empty folder or to an earlier "
            "export, which is replaced"
        )


def _upload(folder: Path, out_uri: str, storage: StorageConfig) -> None:
    store = open_store(out_uri, storage)
    manifest_uri = join(out_uri, EXPORT_MANIFEST_FILE)
    if store.exists(manifest_uri):
        store.delete(manifest_uri)
    for stale in store.list(out_uri.rstrip("/") + "/"):
        store.delete(stale)
    for path in sorted(folder.iterdir()):
        if path.name != EXPORT_MANIFEST_FILE:
            store.write_bytes(join(out_uri, path.name), path.read_bytes())
    store.write_bytes(manifest_uri, (folder / EXPORT_MANIFEST_FILE).read_bytes())


def export_onnx(
    model_uri: str, out_uri: str, storage: StorageConfig, spec: OnnxExportSpec
) -> ExportManifest:
    """Export the model at `model_uri` (any format llmkube publishes or imports; a job's model/
    is read as the version it points at) into `out_uri`, or raise an ExportError and write
    nothing."""
    started = time.monotonic()
    store = open_store(model_uri, storage)
    found = inspect_model(store, model_uri)
    _check_architecture(found)
    check_destination(open_store(out_uri, storage), out_uri)
    base = inspect_model(store, found.base_uri) if found.base_uri else None
    check_memory(weights_in_memory(store, [found] + ([base] if base else [])))
    log.info("loading %s", found.uri)
    served = _load(found, storage, spec.dtype)
    graph = decoder_graph(served.model)
    layout = graph.layout
    context_length = (
        served.model.config.max_context_length
        if isinstance(served.model, HuggingFaceLM)
        else served.model.context_length
    )
    with tempfile.TemporaryDirectory(prefix="llmkube-onnx-") as scratch:
        folder = Path(scratch)
        for name, with_past in ((PREFILL_GRAPH, False), (DECODE_GRAPH, True)):
            log.info("exporting the %s graph (opset %d, %s)", name, spec.opset, spec.dtype)
            trace_graph(graph, folder / name, decode=with_past, opset=spec.opset)
        prefill, decode = (
            graph_record(folder / PREFILL_GRAPH),
            graph_record(folder / DECODE_GRAPH),
        )
        log.info("checking parity with ONNX Runtime")
        parity = check_parity(
            served.model,
            OnnxDecoder(folder, layout.layers),
            vocab_size=layout.vocab_size,
            context_length=context_length,
            bound=PARITY_BOUNDS[spec.dtype],
        )
        (folder / ONNX_TOKENIZER_FILE).write_text(served.tokenizer.to_str())
        manifest = ExportManifest(
            source=found.uri,
            source_version=found.version,
            architecture=base.architecture if base else found.architecture,
            merged_adapter=found.format == "lora",
            opset=spec.opset,
            dtype=spec.dtype,
            layers=layout.layers,
            kv_heads=layout.kv_heads,
            head_dim=layout.head_dim,
            vocab_size=layout.vocab_size,
            context_length=context_length,
            stop_ids=sorted(served.codec.stop_ids),
            prefill=prefill,
            decode=decode,
            parity=parity,
            export_seconds=round(time.monotonic() - started, 1),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        (folder / EXPORT_MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
        log.info("writing %s", out_uri)
        _upload(folder, out_uri, storage)
    return manifest
