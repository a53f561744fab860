"""Running an export with ONNX Runtime: the prefill and decode graphs on a batch, and plain
generation for `llmkube generate --onnx` (the same sampling as PyTorch generation)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from tokenizers import Tokenizer

from llmkube.api.export import (
    DECODE_GRAPH,
    EXPORT_MANIFEST_FILE,
    ONNX_TOKENIZER_FILE,
    PREFILL_GRAPH,
    ExportManifest,
)
from llmkube.api.runconfig import StorageConfig
from llmkube.runtime.export.errors import ExportError
from llmkube.runtime.export.graphs import past_names
from llmkube.runtime.models.local_copy import local_folder
from llmkube.runtime.prompts import PlainPrompts
from llmkube.runtime.sampling import SamplingParams, choose_next
from llmkube.storage import open_store
from llmkube.storage.uri import join

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class Step:
    logits: np.ndarray
    """[batch, steps, vocab]."""
    present: list[np.ndarray]
    """Each layer's key and value: [batch, kv_heads, positions, head_dim]."""


def session(path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )


class OnnxDecoder:
    """The two graphs of an export folder, on ONNX Runtime's CPU provider."""

    def __init__(self, folder: Path, layers: int, threads: int | None = None) -> None:
        self.prefill_session = session(folder / PREFILL_GRAPH, threads)
        self.decode_session = session(folder / DECODE_GRAPH, threads)
        self.past = past_names(layers, "past")

    def prefill(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Step:
        outputs = self.prefill_session.run(
            None, {"input_ids": input_ids, "attention_mask": attention_mask}
        )
        return Step(outputs[0], list(outputs[1:]))

    def decode(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, past: list[np.ndarray]
    ) -> Step:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        feed.update(zip(self.past, past, strict=True))
        outputs = self.decode_session.run(None, feed)
        return Step(outputs[0], list(outputs[1:]))


def read_manifest(folder: Path) -> ExportManifest:
    return ExportManifest.model_validate_json((folder / EXPORT_MANIFEST_FILE).read_bytes())


def load_decoder(folder: Path, threads: int | None = None) -> tuple[OnnxDecoder, ExportManifest]:
    """The graphs of a complete export folder, and its manifest."""
    manifest = read_manifest(folder)
    return OnnxDecoder(folder, manifest.layers, threads), manifest


def generate_onnx(
    decoder: OnnxDecoder,
    manifest: ExportManifest,
    prompt: list[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(temperature=0.0),
    *,
    seed: int | None = None,
) -> list[int]:
    """The new token ids after `prompt` (left-truncated to fit the context), up to and without
    the first stop id: `sampling.generate`, with ONNX Runtime in place of PyTorch."""
    context = manifest.context_length
    max_new_tokens = min(max_new_tokens, context - 1)
    prompt = prompt[-(context - max_new_tokens) :] or [0]
    stop_ids = set(manifest.stop_ids)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    mask = np.ones((1, len(prompt)), dtype=np.int64)
    step = decoder.prefill(np.array([prompt], dtype=np.int64), mask)
    produced: list[int] = []
    while len(produced) < max_new_tokens:
        logits = torch.from_numpy(step.logits[:, -1].astype(np.float32))
        token = int(choose_next(logits, params, generator).item())
        if token in stop_ids:
            break
        produced.append(token)
        if len(produced) == max_new_tokens:
            break
        mask = np.ones((1, mask.shape[1] + 1), dtype=np.int64)
        step = decoder.decode(np.array([[token]], dtype=np.int64), mask, step.present)
    return produced


@dataclass
class OpenedExport:
    decoder: OnnxDecoder
    manifest: ExportManifest
    codec: PlainPrompts
    """The exported tokenizer, prompts taken as they are (as `llmkube generate` does)."""


def open_export(uri: str, storage: StorageConfig, threads: int | None = None) -> OpenedExport:
    """A complete export folder (one with export.json), copied to this machine if remote."""
    store = open_store(uri, storage)
    if not store.exists(join(uri, EXPORT_MANIFEST_FILE)):
        raise ExportError(
            f"no complete ONNX export at {uri} ({EXPORT_MANIFEST_FILE} is missing); make one "
            "with `llmkube export onnx` or spec.export.onnx"
        )
    folder = local_folder(store, uri.rstrip("/"))
    decoder, manifest = load_decoder(folder, threads)
    tokenizer = Tokenizer.from_file(str(folder / ONNX_TOKENIZER_FILE))
    return OpenedExport(decoder, manifest, PlainPrompts(tokenizer, frozenset(manifest.stop_ids)))
