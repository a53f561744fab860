"""Whose model a training job's output holds: the runtime asks before a run starts, the operator
before it creates the job's Ray cluster."""

from dataclasses import dataclass

from pydantic import ValidationError

from llmkube.api.artifacts import ModelPointer, version_uri
from llmkube.api.run_identity import identity_changes, identity_hash, output_identity
from llmkube.api.runconfig import TrainingRunConfig
from llmkube.storage.errors import NotFoundError
from llmkube.storage.store import ObjectStore
from llmkube.storage.uri import join
from llmkube.storage.versions import PROVENANCE_FILE, read_pointer


@dataclass(frozen=True)
class PublishedHere:
    pointer: ModelPointer
    """The version `<output>/model` points at."""
    changes: list[str]
    """How the settings of the run that published it differ from this run's (empty: none)."""


def recorded_run(store: ObjectStore, uri: str) -> TrainingRunConfig | None:
    """The run config stored at `uri`; None when there is none (or not one this version
    reads)."""
    try:
        return TrainingRunConfig.model_validate_json(store.read_bytes(uri))
    except (NotFoundError, ValidationError):
        return None


def published_here(store: ObjectStore, config: TrainingRunConfig) -> PublishedHere | None:
    """The model published at the run's output, if any, and how its run differed."""
    pointer = read_pointer(store, config.output)
    if pointer is None:
        return None
    if pointer.run == identity_hash(output_identity(config)):
        return PublishedHere(pointer, [])
    provenance = join(version_uri(config.output, pointer.version), PROVENANCE_FILE)
    published_by = recorded_run(store, provenance)
    if published_by is None:
        return PublishedHere(pointer, [f"its settings are unknown: {provenance} is missing"])
    changes = identity_changes(output_identity(published_by), output_identity(config))
    # Equal identities that hash apart: a run recorded by another version of llmkube.
    return PublishedHere(pointer, changes or ["settings recorded by another llmkube version"])
