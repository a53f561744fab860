"""Checkpoints under `<output>/checkpoints/step-NNNNNNNN/`: the weights, the optimizer, every
worker's RNG and the data position. The learning-rate schedule is a function of the step, so the
step is its whole state. state.json is written last: a folder without it is ignored."""

import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from llmkube.api.artifacts import (
    CHECKPOINT_STATE_FILE,
    CHECKPOINTS_DIR,
    checkpoint_folder,
    complete_checkpoints_among,
)
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


@dataclass
class CheckpointState:
    step: int
    """Optimizer steps done; training resumes at this step."""
    samples: int
    """Training sequences consumed (the data position)."""
    tokens_seen: int
    total_steps: int


def checkpoint_uri(output: str, step: int) -> str:
    return join(output, checkpoint_folder(step))


def complete_checkpoints(store: ObjectStore, output: str) -> list[tuple[int, str]]:
    """(step, uri) of every checkpoint whose state.json exists, oldest first."""
    return complete_checkpoints_among(store.list(join(output, CHECKPOINTS_DIR) + "/"))


def save_checkpoint(
    store: ObjectStore,
    uri: str,
    *,
    weights: bytes,
    optimizer: dict[str, Any],
    rng_states: list[Any],
    state: CheckpointState,
) -> None:
    store.write_bytes(join(uri, WEIGHTS_FILE), weights)
    store.write_bytes(join(uri, OPTIMIZER_FILE), _torch_bytes(optimizer))
    store.write_bytes(join(uri, RNG_FILE), _torch_bytes(rng_states))
    store.write_bytes(join(uri, CHECKPOINT_STATE_FILE), json.dumps(state.__dict__).encode())


def prune_checkpoints(store: ObjectStore, output: str, keep: int) -> None:
    for _, uri in complete_checkpoints(store, output)[:-keep]:
        # state.json first: a half-deleted checkpoint is then simply incomplete.
        store.delete(join(uri, CHECKPOINT_STATE_FILE))
        for leftover in store.list(uri + "/"):
            store.delete(leftover)


def load_state(store: ObjectStore, uri: str) -> CheckpointState:
    return CheckpointState(**json.loads(store.read_bytes(join(uri, CHECKPOINT_STATE_FILE))))


def load_torch(store: ObjectStore, uri: str, name: str) -> Any:
    # weights_only: a checkpoint is data, never code.
    return torch.load(io.BytesIO(store.read_bytes(join(uri, name))), weights_only=True)


def _torch_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()
