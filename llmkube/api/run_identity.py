"""What makes two training runs the same run, for the two places where it matters: resuming
from a checkpoint (the runtime) and re-running a job over an output that already holds a
published model (the runtime, and the operator before it creates anything)."""

import hashlib
import json
from typing import Any

from llmkube.api.runconfig import TrainingRunConfig

RUN_CONFIG_FILE = "run.json"
"""`<output>/run.json`: the run config of the run that last started on this output (the one
that published, once the model is there)."""


def run_identity(config: TrainingRunConfig) -> dict[str, Any]:
    """What a checkpoint must have been made with for `config` to resume from it. Settings that
    may change between attempts (dropout, learning rate, step count, batch size) are not in it."""

    def wire(model: Any, exclude: set[str]) -> Any:
        return (
            None if model is None else model.model_dump(mode="json", by_alias=True, exclude=exclude)
        )

    return {
        "model": wire(config.model, {"dropout"}),
        "base": config.base,
        "pretrained": wire(config.pretrained, {"dropout", "merge_on_publish"}),
        "tokenizer": wire(config.tokenizer, set()),
        "dataset": wire(config.dataset, {"cache", "skip_invalid_records"}),
    }


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def identity_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`path: old -> new` for every leaf that differs."""
    old, new = _leaves(recorded), _leaves(current)
    return [
        f"{path}: {old.get(path)!r} -> {new.get(path)!r}"
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(_leaves(item, f"{prefix}.{key}" if prefix else key))
        return found
    return {prefix: value}


def output_identity(config: TrainingRunConfig) -> dict[str, Any]:
    """What a published model was trained with: a run that differs in any of it would publish
    another model, so it must not finish at once with the old one."""
    return run_identity(config) | {
        "training": config.training.model_dump(mode="json", by_alias=True, exclude={"compile"}),
    }


def output_in_use(output: str, changes: list[str]) -> str:
    """Why a run may not finish with the model already published at `output`."""
    return (
        f"{output} already holds a model published by a run with other settings ("
        + "; ".join(changes)
        + "). Finishing now would report that model as this run's. Write to a new output, or "
        "set restartPolicy: restart to train again there (the published versions stay)"
    )
