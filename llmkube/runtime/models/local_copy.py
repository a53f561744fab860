"""A pretrained model's (or an ONNX export's) folder on this machine. transformers (and ONNX
Runtime) read local files, so each process copies the folder from object storage once into a
cache shared by the processes of the machine; a file is fetched again only when its size or
etag in storage changed. A file:// folder is read where it is."""

import hashlib
import json
import os
import tempfile
from pathlib import Path

from llmkube.runtime.models.errors import ModelError
from llmkube.storage import ObjectStore
from llmkube.storage.uri import local_path
from llmkube.storage.versions import resolve_model

MODEL_CACHE_ENV = "LLMKUBE_MODEL_CACHE"
SOURCE_FILE = ".llmkube-source.json"
"""In each cached folder: name → [size, etag] of every file as it was copied."""
WEIGHTS_SUFFIX = ".safetensors"
REQUIRED = "config.json"


def model_cache_root() -> Path:
    configured = os.environ.get(MODEL_CACHE_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "llmkube" / "models"


def model_file_names(
    store: ObjectStore, uri: str, what: str, required: str = REQUIRED
) -> list[str]:
    """The files of a model folder, checked to hold `required` (its config) and safetensors
    weights."""
    prefix = uri.rstrip("/") + "/"
    names = {
        listed[len(prefix) :] for listed in store.list(prefix) if "/" not in listed[len(prefix) :]
    }
    if not names:
        raise ModelError(f"{what} {uri} holds no files; import a model there first")
    if required not in names:
        raise ModelError(
            f"{what} {uri} has no {required} (found {sorted(names)[:8]}); it must be a "
            "Hugging Face model folder (`llmkube models import` writes one)"
        )
    if not any(name.endswith(WEIGHTS_SUFFIX) for name in names):
        raise ModelError(
            f"{what} {uri} has no *.safetensors weights (found {sorted(names)[:8]}); "
            "`llmkube models import` converts other formats"
        )
    return sorted(names)


def local_model_folder(
    store: ObjectStore, uri: str, *, what: str = "model.pretrained.uri", required: str = REQUIRED
) -> Path:
    """A local folder with the model's files (or an adapter's: `required` names its config),
    fetched if needed. A job's model/ is fetched as the version it points at now."""
    uri = resolve_model(store, uri).uri
    model_file_names(store, uri, what, required)
    return local_folder(store, uri)


def local_folder(store: ObjectStore, uri: str) -> Path:
    """The files directly under `uri` in the machine's cache, each fetched again only when it
    changed in storage; a file:// folder where it is."""
    if uri.startswith("file://"):
        return local_path(uri.rstrip("/"))
    prefix = uri.rstrip("/") + "/"
    files = [info for info in store.list_info(prefix) if "/" not in info.uri[len(prefix) :]]
    folder = model_cache_root() / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {info.uri[len(prefix) :]: [info.size, info.etag] for info in files}
    record = folder / SOURCE_FILE
    copied: dict[str, list[object]] = json.loads(record.read_text()) if record.exists() else {}
    for name, tag in sorted(wanted.items()):
        path = folder / name
        if copied.get(name) == tag and path.exists() and path.stat().st_size == tag[0]:
            continue
        _write_atomically(path, store.read_bytes(prefix + name))
        copied[name] = tag
        _write_atomically(record, json.dumps(copied).encode())
    for stale in set(copied) - set(wanted):
        (folder / stale).unlink(missing_ok=True)
        del copied[stale]
    _write_atomically(record, json.dumps(copied).encode())
    return folder


def _write_atomically(path: Path, data: bytes) -> None:
    # Several workers of one machine may fetch the same folder at once: each renames a whole
    # file into place, so a reader never sees half of one.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.replace(temporary, path)
