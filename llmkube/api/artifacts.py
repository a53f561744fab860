"""Files the runtime writes under a job's output and the operator and CLI read (the layout:
docs/architecture.md)."""

import re
from collections.abc import Iterable

from pydantic import ConfigDict

from llmkube.api.base import WireModel

PROGRESS_FILE = "progress.json"
METRICS_FILE = "metrics.jsonl"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_STATE_FILE = "state.json"
"""Written last into `<output>/checkpoints/step-NNNNNNNN/`: a folder without it is ignored."""
_COMPLETE_CHECKPOINT = re.compile(
    rf"/{CHECKPOINTS_DIR}/step-(\d+)/" + re.escape(CHECKPOINT_STATE_FILE) + "$"
)


def checkpoint_folder(step: int) -> str:
    return f"{CHECKPOINTS_DIR}/step-{step:08d}"


def complete_checkpoints_among(uris: Iterable[str]) -> list[tuple[int, str]]:
    """(step, folder URI) of every complete checkpoint among a listing of object URIs, oldest
    first. What a resumed run starts from is the last of them."""
    found = []
    for uri in uris:
        match = _COMPLETE_CHECKPOINT.search(uri)
        if match:
            found.append((int(match.group(1)), uri.removesuffix("/" + CHECKPOINT_STATE_FILE)))
    return sorted(found)


class ProgressRecord(WireModel):
    """`<output>/progress.json`: rewritten by the training driver as steps complete."""

    # snake_case on disk (it is a file format, not a Kubernetes object); tolerant of additions.
    model_config = ConfigDict(alias_generator=None, extra="ignore")

    step: int
    """Optimizer steps done."""
    total_steps: int
    """Optimizer steps planned."""
    epoch: float = 0.0
    """Passes over the training data so far."""
    tokens_seen: int = 0
    """Training tokens consumed so far."""
    eta_s: float | None = None
    """Estimated seconds to the end of training."""
    updated_at: str
    """When this was written (RFC 3339)."""
    checkpoint_uri: str | None = None
    """The newest checkpoint written."""
    checkpoint_step: int | None = None
    """The step of the newest checkpoint."""
    parameters: int | None = None
    """Parameters of the model being trained (a LoRA run's base and adapters)."""
    trainable_parameters: int | None = None
    """Parameters that train."""


class MetricsRecord(WireModel):
    """One line of `<output>/metrics.jsonl`: a logged training step or an evaluation."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    step: int
    """Optimizer step the numbers belong to."""
    kind: str = "train"
    """train, eval, or resume (training carried on from the checkpoint at this step)."""
    train_loss: float | None = None
    """Training loss (train records)."""
    learning_rate: float | None = None
    """Learning rate at this step."""
    tokens_per_second: float | None = None
    """Throughput over all workers."""
    eval_loss: float | None = None
    """Validation loss (eval records)."""
    perplexity: float | None = None
    """exp(eval_loss)."""
    accuracy: float | None = None
    """Next-token accuracy on validation data."""


EVAL_FILE = "eval.json"
"""In a published model's folder: the final evaluation (loss, perplexity, accuracy, samples)."""
MERGED_DIR = "merged"
"""In a LoRA job's model folder with mergeOnPublish: the base with the adapters merged in."""
MODEL_RECORD_FILE = "llmkube-model.json"
"""Written last into a published Hugging Face model folder: what it holds and where it came
from."""
GPT_CONFIG_FILE = "config.json"
"""An llmkube GPT artifact's config, written last into its folder."""
PUBLISHED_LAST = (GPT_CONFIG_FILE, MODEL_RECORD_FILE)
"""Uploaded after a published model's other files, in this order: whoever finds them finds the
rest."""
VERSIONS_DIR = "versions"
"""`<output>/versions/<version>/`: each model a job published, never changed once written."""
MODEL_POINTER_FILE = "current.json"
"""`<output>/model/current.json`: which version `<output>/model` stands for. Written in one PUT
after the version's files, so a reader sees the old version or the new one, never a mix."""


class ModelPointer(WireModel):
    """`<output>/model/current.json`."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    version: str
    """The folder under `<output>/versions/`: a digest of the model's files."""
    run: str
    """A hash of the settings of the run that published it (`run_identity.output_identity`)."""
    published_at: str
    """When it was published (RFC 3339)."""


def model_pointer_uri(output: str) -> str:
    return f"{output.rstrip('/')}/{MODEL_DIR}/{MODEL_POINTER_FILE}"


def version_uri(output: str, version: str) -> str:
    return f"{output.rstrip('/')}/{VERSIONS_DIR}/{version}"


class BaseModelRecord(WireModel):
    """The pretrained model a fine-tune started from."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    uri: str
    """Where it was read from."""
    digest: str
    """sha256 over its files' names, sizes and etags: changes whenever a file does."""


class ModelRecord(WireModel):
    """`<output>/model/llmkube-model.json`."""

    model_config = ConfigDict(alias_generator=None, extra="ignore")

    format: str
    """gpt (llmkube's own), huggingface (a full model folder) or lora (a peft adapter)."""
    architecture: str
    """gpt, or the Hugging Face model_type (llama, qwen2, gpt2)."""
    parameters: int
    """Parameters of the model as trained (base and adapters)."""
    trainable_parameters: int
    """Parameters that trained."""
    base: BaseModelRecord | None = None
    """The pretrained model fine-tuned (huggingface and lora)."""
    merged: str | None = None
    """Sub-folder holding the base with the adapters merged in (lora with mergeOnPublish)."""
