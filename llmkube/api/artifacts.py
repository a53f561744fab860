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
