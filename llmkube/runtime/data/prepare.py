"""Preparing a dataset once: read and clean every file (Ray tasks, in parallel), drop exact
duplicates and split off validation text (stages.py), train or load the tokenizer, tokenize (Ray
tasks), and write fixed-dtype shards under `<cache>/tokens/<hash>/`. The hash covers the files'
content tags, the preprocessing and the tokenizer, so an unchanged dataset is never prepared
twice."""

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import ray
from tokenizers import Tokenizer

from llmkube.api.runconfig import TrainingRunConfig
from llmkube.api.training import TokenizerSpec
from llmkube.runtime.artifact import TOKENIZER_FILE as ARTIFACT_TOKENIZER_FILE
from llmkube.runtime.data.documents import FileDocuments, file_documents
from llmkube.runtime.data.errors import DataError
from llmkube.runtime.data.manifest import (
    MANIFEST_FILE,
    TOKENIZER_FILE,
    DataManifest,
    PreparationStats,
    Shard,
    loss_shard,
)
from llmkube.runtime.data.stages import (
    check_split_sizes,
    hold_out_tail,
    merge_documents,
    split_documents,
)
from llmkube.runtime.tokenizer import build_tokenizer, separator_ids
from llmkube.storage import ObjectInfo, ObjectStore, StorageError, open_store
from llmkube.storage.uri import join

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_FORMAT = 1
SHARD_TOKENS = 64 * 1024 * 1024
TOKENIZE_BATCH_CHARS = 4 * 1024 * 1024


def dataset_files(store: ObjectStore, source: str, what: str) -> list[ObjectInfo]:
    """The data files under a prefix (hidden and `_`-prefixed names are not data)."""
    try:
        listed = store.list_info(source)
    except StorageError as error:
        raise type(error)(f"{what}: {error}") from None
    files = [info for info in listed if not info.uri.rsplit("/", 1)[-1].startswith((".", "_"))]
    if not files:
        raise DataError(f"{what} {source} holds no files; upload the dataset there or fix the URI")
    return files


def check_dataset(config: TrainingRunConfig) -> None:
    """Fail fast on a dataset prefix that is missing, empty or unreadable."""
    dataset = config.dataset
    dataset_files(open_store(dataset.source, config.storage), dataset.source, "dataset.source")
    if dataset.validation.source:
        source = dataset.validation.source
        dataset_files(open_store(source, config.storage), source, "dataset.validation.source")


def cache_key(
    config: TrainingRunConfig,
    files: Sequence[ObjectInfo],
    base_tokenizer: str,
    **more: object,
) -> str:
    dataset = config.dataset
    described = {
        **more,
        "format": CACHE_FORMAT,
        "dataset": dataset.model_dump(mode="json", exclude={"cache", "source"}),
        "tokenizer": (
            config.tokenizer.model_dump(mode="json")
            if config.tokenizer and not base_tokenizer
            else None
        ),
        "base_tokenizer": hashlib.sha256(base_tokenizer.encode()).hexdigest(),
        "files": [(info.uri.removeprefix(dataset.source), info.size, info.etag) for info in files],
    }
    text = json.dumps(described, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@ray.remote
def _read_file(config_wire: dict[str, object], uri: str) -> FileDocuments:
    config = TrainingRunConfig.model_validate(config_wire)
    store = open_store(uri, config.storage)
    dataset = config.dataset
    return file_documents(
        store.read_bytes(uri), dataset.format, dataset.text_field, dataset.preprocessing
    )


@ray.remote
def _tokenize(tokenizer_json: str, documents: list[str], dtype: str) -> np.ndarray:
    tokenizer = Tokenizer.from_str(tokenizer_json)
    separator = separator_ids(tokenizer)
    pieces: list[int] = []
    for encoding in tokenizer.encode_batch(documents):
        pieces.extend(encoding.ids)
        pieces.extend(separator)
    return np.asarray(pieces, dtype=dtype)


def _read_all(config: TrainingRunConfig, files: Sequence[ObjectInfo]) -> list[FileDocuments]:
    wire = config.model_dump(mode="json", by_alias=True)
    return ray_get([_read_file.remote(wire, info.uri) for info in files])


def ray_get(refs: list[ray.ObjectRef[T]]) -> list[T]:
    """Results of Ray tasks; a task's storage or data error is raised as itself, so the user
    sees its message rather than a remote traceback."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, StorageError | DataError):
            raise error.cause from None
        raise


def _batches(documents: Sequence[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += len(document)
        if size >= TOKENIZE_BATCH_CHARS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _tokenize_all(tokenizer: Tokenizer, documents: Sequence[str], dtype: str) -> np.ndarray:
    tokenizer_json = tokenizer.to_str()
    parts = ray_get([_tokenize.remote(tokenizer_json, b, dtype) for b in _batches(documents)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def write_shards(
    store: ObjectStore,
    uri: str,
    split: str,
    tokens: np.ndarray,
    loss: np.ndarray | None = None,
    row_tokens: int = 1,
) -> list[Shard]:
    """Token shards (and their loss masks); a shard ends on a whole row of `row_tokens`."""
    shards = []
    size = SHARD_TOKENS - SHARD_TOKENS % row_tokens
    for index, start in enumerate(range(0, max(len(tokens), 1), size)):
        part = tokens[start : start + size]
        name = f"{split}-{index:05d}.bin"
        store.write_bytes(join(uri, name), part.tobytes())
        if loss is not None:
            store.write_bytes(join(uri, loss_shard(name)), loss[start : start + size].tobytes())
        shards.append(Shard(name=name, tokens=len(part)))
    return shards


def prepare_dataset(
    config: TrainingRunConfig, base_tokenizer: str = ""
) -> tuple[str, DataManifest]:
    """Prepare (or find prepared) shards; returns the cache folder and its manifest.

    `base_tokenizer` is the tokenizer.json of the model training continues from, if any."""
    dataset = config.dataset
    context = config.context_length
    files, validation_files = source_files(config)
    assert dataset.cache is not None, "the run config resolves the cache location"
    key = cache_key(config, [*files, *validation_files], base_tokenizer)
    cache_uri = join(dataset.cache, "tokens", key)
    cache = open_store(cache_uri, config.storage)
    manifest_uri = join(cache_uri, MANIFEST_FILE)
    if cache.exists(manifest_uri):
        manifest = DataManifest.model_validate_json(cache.read_bytes(manifest_uri))
        log.info(
            "dataset already prepared at %s: %s train tokens",
            cache_uri,
            f"{manifest.stats.train_tokens:,}",
        )
        return cache_uri, manifest

    started = time.monotonic()
    log.info("preparing %d files from %s", len(files), dataset.source)
    cleaned = merge_documents(_read_all(config, files), dedupe=dataset.preprocessing.dedupe)
    if not cleaned.documents:
        raise DataError(
            f"no documents left in {dataset.source} after preprocessing"
            + (f" (skipped: {_describe(cleaned.skipped)})" if cleaned.skipped else "")
            + "; check dataset.format, dataset.textField and preprocessing.minChars"
        )
    if validation_files:
        validation_docs = [d for r in _read_all(config, validation_files) for d in r.documents]
        train_docs = cleaned.documents
        validation_from = "source"
    else:
        train_docs, validation_docs = split_documents(
            cleaned.documents, dataset.validation.fraction
        )
        validation_from = "documents"

    tokenizer = (
        Tokenizer.from_str(base_tokenizer)
        if base_tokenizer
        else build_tokenizer(config.tokenizer or TokenizerSpec(), train_docs)
    )
    vocab_size = tokenizer.get_vocab_size()
    dtype = "uint16" if vocab_size <= 2**16 else "uint32"
    train = _tokenize_all(tokenizer, train_docs, dtype)
    validation = _tokenize_all(tokenizer, validation_docs, dtype)
    if len(validation) < context + 1 and not validation_files:
        train, validation = hold_out_tail(train, validation, context, dataset.validation.fraction)
        validation_from = "tokens"
    check_split_sizes({"training": train, "validation": validation}, context, dataset.source)

    cache.write_bytes(join(cache_uri, TOKENIZER_FILE), tokenizer.to_str().encode())
    seconds = time.monotonic() - started
    manifest = DataManifest(
        dtype=dtype,
        vocab_size=vocab_size,
        train=write_shards(cache, cache_uri, "train", train),
        validation=write_shards(cache, cache_uri, "validation", validation),
        validation_from=validation_from,
        stats=PreparationStats(
            files=len(files) + len(validation_files),
            bytes=cleaned.bytes_read,
            documents=len(cleaned.documents),
            duplicates=cleaned.duplicates,
            skipped=cleaned.skipped,
            train_tokens=len(train),
            validation_tokens=len(validation),
            seconds=seconds,
        ),
    )
    cache.write_bytes(manifest_uri, manifest.model_dump_json(indent=2).encode())
    _log_prepared(manifest.stats)
    return cache_uri, manifest


def source_files(config: TrainingRunConfig) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
    """The training files, and the validation source's when there is one."""
    dataset = config.dataset
    files = dataset_files(
        open_store(dataset.source, config.storage), dataset.source, "dataset.source"
    )
    if not dataset.validation.source:
        return files, []
    source = dataset.validation.source
    validation = dataset_files(
        open_store(source, config.storage), source, "dataset.validation.source"
    )
    return files, validation


def _log_prepared(stats: PreparationStats) -> None:
    seconds = max(stats.seconds, 1e-9)
    log.info(
        "prepared %s documents (%d duplicates dropped%s) into %s train + %s validation tokens "
        "in %.1fs: %s bytes/s, %s tokens/s",
        f"{stats.documents:,}",
        stats.duplicates,
        f"; skipped {_describe(stats.skipped)}" if stats.skipped else "",
        f"{stats.train_tokens:,}",
        f"{stats.validation_tokens:,}",
        stats.seconds,
        f"{stats.bytes / seconds:,.0f}",
        f"{(stats.train_tokens + stats.validation_tokens) / seconds:,.0f}",
    )


def _describe(skipped: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))


def base_tokenizer_json(config: TrainingRunConfig) -> str:
    base = config.base_source()
    if base is None:
        return ""
    store = open_store(base, config.storage)
    return store.read_bytes(join(base, ARTIFACT_TOKENIZER_FILE)).decode()
