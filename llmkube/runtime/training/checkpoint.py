"""Checkpoints under `<output>/checkpoints/step-NNNNNNNN/`: the weights, the optimizer, every
worker's RNG and the data position. The learning-rate schedule is a function of the step, so the
step is its whole state. state.json is written last: a folder without it is ignored, and removed
before a run resumes.

state.json also records what the checkpoint was made with (`run_identity`: the model's shape,
its tokenizer, the data whose position it holds) and a hash of that. A run whose own identity
differs refuses to resume from it and says what differs, instead of loading weights of another
shape or skipping into other data."""

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
from llmkube.api.run_identity import identity_changes, run_identity
from llmkube.api.runconfig import TrainingRunConfig
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
    identity: dict[str, Any] | None = None
    """`run_identity` of the run that wrote it (None: written before llmkube recorded it)."""
    identity_hash: str | None = None
    """sha256 of `identity`, a quick equality check for tools."""


class CheckpointMismatchError(Exception):
    """The newest checkpoint was made by a run with another model, tokenizer or dataset."""


def check_resumable(store: ObjectStore, config: TrainingRunConfig) -> int | None:
    """Before a run starts: remove checkpoint folders a crash left without their state.json, and
    make sure the newest checkpoint (if any) fits this run. Its step, or None without one."""
    removed = remove_incomplete_checkpoints(store, config.output)
    if removed:
        log.info("removed %d incomplete checkpoint folder(s): %s", len(removed), ", ".join(removed))
    checkpoints = complete_checkpoints(store, config.output)
    if not checkpoints:
        return None
    step, uri = checkpoints[-1]
    recorded = load_state(store, uri).identity
    if recorded is None:
        log.warning("checkpoint %s records no run identity; resuming from it unchecked", uri)
        return step
    changes = identity_changes(recorded, run_identity(config))
    if changes:
        raise CheckpointMismatchError(
            f"the newest checkpoint, {uri} (step {step}), was made with a different run: "
            + "; ".join(changes)
            + ". Resuming would load it into another model or skip into other data. Write to "
            "another output, or set restartPolicy: restart to start over there"
        )
    return step


def remove_incomplete_checkpoints(store: ObjectStore, output: str) -> list[str]:
    """Delete every checkpoint folder without a state.json; the folders removed."""
    root = join(output, CHECKPOINTS_DIR) + "/"
    listed = store.list(root)
    complete = {uri for _, uri in complete_checkpoints_among(listed)}
    folders: dict[str, list[str]] = {}
    for uri in listed:
        folder = root + uri[len(root) :].split("/", 1)[0]
        folders.setdefault(folder, []).append(uri)
    incomplete = sorted(folder for folder in folders if folder not in complete)
    for folder in incomplete:
        for uri in folders[folder]:
            store.delete(uri)
    return incomplete


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
