"""Versioned models: a job publishes each model under `<output>/versions/<digest>/` and then
points `<output>/model` at it with one small file, so that a reader resolves `<output>/model`
to a complete, never-changing folder. A folder without a pointer (an imported model, a model
published by hand) is read where it is."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from llmkube.api.artifacts import (
    MODEL_DIR,
    MODEL_POINTER_FILE,
    ModelPointer,
    model_pointer_uri,
    version_uri,
)
from llmkube.storage.errors import NotFoundError, StorageError
from llmkube.storage.store import ObjectStore
from llmkube.storage.uri import join

VERSION_LENGTH = 16
"""Hex digits of the content digest that name a version: enough that two models never share
one."""
PROVENANCE_FILE = "run.json"
"""In each version folder: the run config of the run that published it (not in its digest)."""


class BadPointerError(StorageError):
    """A model pointer that is not one (edited by hand, or written by something else)."""


@dataclass(frozen=True)
class ResolvedModel:
    uri: str
    """The folder that holds the model's files."""
    version: str | None
    """The published version it is (None: a folder read where it is)."""


def read_pointer(store: ObjectStore, output: str) -> ModelPointer | None:
    """The version `<output>/model` points at; None when nothing was published there."""
    return _pointer(store, model_pointer_uri(output))


def _pointer(store: ObjectStore, uri: str) -> ModelPointer | None:
    try:
        return ModelPointer.model_validate_json(store.read_bytes(uri))
    except NotFoundError:
        return None
    except ValidationError:
        raise BadPointerError(
            f"{uri} is not a model pointer; delete it, or publish the model again"
        ) from None


def resolve_model(store: ObjectStore, uri: str) -> ResolvedModel:
    """The folder a model URI stands for: a job's `<output>/model` is the version its pointer
    names, and `<output>/model/merged` that version's merged/; any other folder is itself.
    Every reader of a model resolves it first, once, and reads only from the result."""
    uri = uri.rstrip("/")
    pointer = _pointer(store, join(uri, MODEL_POINTER_FILE))
    if pointer is not None:
        output = uri.removesuffix("/" + MODEL_DIR)
        return ResolvedModel(version_uri(output, pointer.version), pointer.version)
    output, inside, sub_folder = uri.rpartition(f"/{MODEL_DIR}/")
    pointer = _pointer(store, model_pointer_uri(output)) if inside else None
    if pointer is None:
        return ResolvedModel(uri, None)
    return ResolvedModel(join(version_uri(output, pointer.version), sub_folder), pointer.version)


def content_version(folder: Path) -> str:
    """The version a staged model folder publishes as: a digest of its files' names and
    bytes, so the same model published again is the same version."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:VERSION_LENGTH]


def publish_version(
    store: ObjectStore,
    output: str,
    folder: Path,
    *,
    run: str,
    provenance: bytes,
    last: tuple[str, ...] = (),
) -> ModelPointer:
    """Upload the model staged in `folder` as a new version of `output` (the files named in
    `last` after the others, in that order, so a reader of the version folder itself that finds
    them finds the rest), record `provenance`, then point `<output>/model` at it."""
    version = content_version(folder)
    target = version_uri(output, version)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    files.sort(key=lambda path: last.index(path.name) if path.name in last else -1)
    names = {path.relative_to(folder).as_posix(): path.stat().st_size for path in files}
    prefix = target + "/"
    uploaded = {
        info.uri.removeprefix(prefix): info.size
        for info in store.list_info(prefix)
        if info.uri.removeprefix(prefix) != PROVENANCE_FILE
    }
    if uploaded != names:  # the same model already uploaded whole is not uploaded again
        for path in files:
            store.write_bytes(join(target, path.relative_to(folder).as_posix()), path.read_bytes())
    store.write_bytes(join(target, PROVENANCE_FILE), provenance)
    pointer = ModelPointer(
        version=version, run=run, published_at=datetime.now(UTC).isoformat(timespec="seconds")
    )
    store.write_bytes(model_pointer_uri(output), pointer.model_dump_json(indent=2).encode())
    return pointer
