"""What a published model folder holds, read from object storage without any ML library: llmkube's
GPT, a Hugging Face model, or a LoRA adapter on a base; and whether an adapter fits the base a
deployment serves. The serving runtime loads by it; the operator checks a deployment's adapters
with it before they reach a replica."""

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Literal

from pydantic import ValidationError

from llmkube.api.artifacts import MODEL_RECORD_FILE, ModelRecord
from llmkube.storage.errors import NotFoundError, StorageError
from llmkube.storage.store import ObjectStore
from llmkube.storage.uri import join
from llmkube.storage.versions import resolve_model

CONFIG_FILE = "config.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"

ModelFormat = Literal["gpt", "huggingface", "lora"]


class NotAModelError(StorageError):
    """The folder exists but is not a model llmkube can serve; the message says what it is."""


@dataclass(frozen=True)
class ModelFolder:
    uri: str
    """The folder with the model's files (a job's model/ resolved to the version it points at)."""
    format: ModelFormat
    architecture: str
    """gpt, or the Hugging Face model_type."""
    base_uri: str | None = None
    """lora: the folder of the model the adapter was trained on."""
    base_digest: str | None = None
    """lora: that model's `folder_digest` when the adapter was trained (None: not recorded)."""
    rank: int | None = None
    """lora: the adapter's rank."""
    version: str | None = None
    """The published version (None: a folder that is not a job's model/)."""


def folder_digest(store: ObjectStore, uri: str) -> str:
    """sha256 over the names, sizes and etags of every file under `uri`: changes whenever a
    file does, without reading any."""
    prefix = uri.rstrip("/") + "/"
    listing = sorted(
        (info.uri.removeprefix(prefix), info.size, info.etag) for info in store.list_info(prefix)
    )
    return "sha256:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def model_digest(store: ObjectStore, uri: str) -> str:
    """`folder_digest` of the folder a model URI resolves to."""
    return folder_digest(store, resolve_model(store, uri).uri)


def _json(store: ObjectStore, uri: str) -> dict[str, object]:
    try:
        loaded = json.loads(store.read_bytes(uri))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise NotAModelError(f"{uri} is not valid JSON") from None
    if not isinstance(loaded, dict):
        raise NotAModelError(f"{uri} is not a JSON object")
    return loaded


def inspect_model(store: ObjectStore, uri: str) -> ModelFolder:
    """What the model at `uri` is (resolved to the version a job's model/ points at);
    NotFoundError when there is no model there."""
    resolved = resolve_model(store, uri)
    found = _inspect(store, resolved.uri)
    return replace(found, version=resolved.version)


def _inspect(store: ObjectStore, uri: str) -> ModelFolder:
    record_uri = join(uri, MODEL_RECORD_FILE)
    if store.exists(join(uri, ADAPTER_CONFIG_FILE)):
        return _adapter(store, uri, record_uri)
    if not store.exists(join(uri, CONFIG_FILE)):
        raise NotFoundError(
            f"no model at {uri} ({CONFIG_FILE} is missing); point at a published model/ "
            "folder or an imported model"
        )
    config = _json(store, join(uri, CONFIG_FILE))
    if config.get("architecture") == "gpt":
        return ModelFolder(uri, "gpt", "gpt")
    if isinstance(config.get("model_type"), str):
        return ModelFolder(uri, "huggingface", str(config["model_type"]))
    raise NotAModelError(
        f"{uri}/{CONFIG_FILE} is neither an llmkube GPT config nor a Hugging Face one "
        "(no model_type)"
    )


def _adapter(store: ObjectStore, uri: str, record_uri: str) -> ModelFolder:
    settings = _json(store, join(uri, ADAPTER_CONFIG_FILE))
    if settings.get("peft_type") != "LORA":
        raise NotAModelError(
            f"{uri} holds a {settings.get('peft_type')} adapter; llmkube serves LoRA adapters"
        )
    rank = settings.get("r")
    base_uri = settings.get("base_model_name_or_path")
    digest = None
    architecture = "unknown"
    if store.exists(record_uri):
        try:
            record = ModelRecord.model_validate_json(store.read_bytes(record_uri))
        except ValidationError:
            raise NotAModelError(f"{record_uri} is not a model record") from None
        architecture = record.architecture
        if record.base is not None:
            base_uri, digest = record.base.uri, record.base.digest
    if not isinstance(base_uri, str) or "://" not in base_uri:
        raise NotAModelError(
            f"the adapter at {uri} does not say which stored model it was trained on "
            f"({ADAPTER_CONFIG_FILE} base_model_name_or_path is {base_uri!r}); set it to the "
            "base model's URI"
        )
    if digest is None and base_uri.partition("://")[0] == uri.partition("://")[0]:
        # Compared by folder, like the base a deployment serves: a job's model/ is a pointer.
        base_uri = resolve_model(store, base_uri).uri
    return ModelFolder(
        uri,
        "lora",
        architecture,
        base_uri=base_uri.rstrip("/"),
        base_digest=digest,
        rank=rank if isinstance(rank, int) else None,
    )


def adapter_problem(
    adapter: ModelFolder, *, base_uri: str, base_digest: str, max_rank: int
) -> str | None:
    """Why `adapter` cannot be served on the base at `base_uri` (None: it can)."""
    if adapter.format != "lora":
        return f"{adapter.uri} is a {adapter.format} model, not a LoRA adapter"
    if adapter.base_digest is not None and adapter.base_digest != base_digest:
        return (
            f"{adapter.uri} was trained on {adapter.base_uri} as it was then (digest "
            f"{adapter.base_digest[:19]}…); the deployment serves {base_uri} (digest "
            f"{base_digest[:19]}…). Serve the base it was trained on, or retrain the adapter"
        )
    if adapter.base_digest is None and adapter.base_uri != base_uri.rstrip("/"):
        return f"{adapter.uri} was trained on {adapter.base_uri}; the deployment serves {base_uri}"
    if adapter.rank is not None and adapter.rank > max_rank:
        return (
            f"{adapter.uri} has rank {adapter.rank}, above serving.maxLoraRank {max_rank}; "
            "raise maxLoraRank or train a smaller adapter"
        )
    return None
