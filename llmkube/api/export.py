"""Exporting a published model for inference elsewhere: `spec.export` of an LLMTrainingJob, and
`<output>/onnx/export.json`, the manifest `llmkube export onnx` writes last (docs/export.md)."""

from typing import Literal

from pydantic import ConfigDict, Field

from llmkube.api.base import WireModel

ONNX_DIR = "onnx"
"""Where a training job's export lands: next to model/ under its output."""
EXPORT_MANIFEST_FILE = "export.json"
"""Written last into an export folder: a folder without it is not a complete export."""
PREFILL_GRAPH = "prefill.onnx"
DECODE_GRAPH = "decode.onnx"
ONNX_TOKENIZER_FILE = "tokenizer.json"

OLDEST_OPSET = 18
"""torch.onnx's exporter emits opset-18 operators (Split with a num_outputs attribute)."""
NEWEST_OPSET = 25
"""ONNX Runtime 1.31 runs up to opset 25; from 26 on, the exporter writes operators it cannot
load (Attention-26). tests/unit/test_onnx_export.py checks both bounds against the pinned
versions."""

OnnxDtype = Literal["float32", "float16"]

PARITY_BOUNDS: dict[str, float] = {"float32": 1e-3, "float16": 5e-2}
"""The largest absolute logit difference an export may show against PyTorch, per dtype. Half
precision keeps about three significant digits, so its logits differ in the second decimal."""


class OnnxExportSpec(WireModel):
    """ONNX graphs of the published model, checked against PyTorch with ONNX Runtime."""

    enabled: bool = False
    """Export after publishing (into <output>/onnx/)."""
    opset: int = Field(default=OLDEST_OPSET, ge=OLDEST_OPSET, le=NEWEST_OPSET)
    """ONNX operator set: 18 (the exporter's oldest) to 25 (ONNX Runtime 1.31's newest)."""
    dtype: OnnxDtype = "float32"
    """Weights and activations of the graphs. float16 halves their size; its parity bound is
    looser (5e-2 against 1e-3)."""


class ExportSpec(WireModel):
    """Formats the published model is exported to."""

    onnx: OnnxExportSpec = Field(default_factory=OnnxExportSpec)
    """ONNX (docs/export.md)."""


class GraphIO(WireModel):
    """One input or output of an exported graph."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    name: str
    shape: list[int | str]
    """Sizes, with the names of dynamic axes (batch, sequence, past, total)."""
    dtype: str


class GraphRecord(WireModel):
    model_config = ConfigDict(alias_generator=None, extra="ignore")

    file: str
    inputs: list[GraphIO]
    outputs: list[GraphIO]


class ParityRecord(WireModel):
    """What the parity check measured: ONNX Runtime (CPU) against the PyTorch model."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    bound: float
    prefill_max_abs_diff: float
    """Over every real (unpadded) position of a batch of prompts of mixed lengths."""
    decode_max_abs_diff: float
    """Over `decode_steps` steps fed the same tokens."""
    decode_steps: int
    prompt_lengths: list[int]


class ExportManifest(WireModel):
    """`export.json`: what the folder holds and how to feed it."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    format: Literal["onnx"] = "onnx"
    source: str
    """The model folder exported (a job's model/ resolved to its version)."""
    source_version: str | None = None
    """That version's name, when the source is a job's model/."""
    architecture: str
    """gpt, or the Hugging Face model_type."""
    merged_adapter: bool = False
    """A LoRA adapter exported merged into its base's weights."""
    opset: int
    dtype: OnnxDtype
    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    stop_ids: list[int]
    """Token ids that end a generation (end of text or of a turn)."""
    prefill: GraphRecord
    decode: GraphRecord
    parity: ParityRecord
    export_seconds: float
    created_at: str
