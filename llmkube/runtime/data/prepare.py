"""Preparing a dataset once: read and clean every file (Ray tasks, in parallel), drop exact
duplicates, split off validation text, train or load the tokenizer, tokenize (Ray tasks), and
write fixed-dtype shards under `<cache>/tokens/<hash>/`. The hash covers the files' content
tags, the preprocessing and the tokenizer, so an unchanged dataset is never prepared twice."""

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
from llmkube.runtime.artifact import TOKENIZER_FILE as ARTIFACT_TOKENIZER_FILE
from llmkube.runtime.data.documents import FileDocuments, file_documents
from llmkube.runtime.data.errors import DataError
from llmkube.runtime.data.manifest import (
    MANIFEST_FILE,
    TOKENIZER_FILE,
    DataManifest,
    PreparationStats,
    Shard,
)
from llmkube.runtime.tokenizer import build_tokenizer, separator_ids
from llmkube.storage import ObjectInfo, ObjectStore, StorageError, open_store
from llmkube.storage.uri import join

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_FORMAT = 1
SHARD_TOKENS = 64 * 1024 * 1024
TOKENIZE_BATCH_CHARS = 4 * 1024 * 1024
DEFAULT_VALIDATION_FRACTION = 0.05


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


def cache_key(config: TrainingRunConfig, files: Sequence[ObjectInfo], base_tokenizer: str) -> str:
    dataset = config.dataset
    described = {
        "format": CACHE_FORMAT,
        "dataset": dataset.model_dump(mode="json", exclude={"cache", "source"}),
        "tokenizer": config.tokenizer.model_dump(mode="json") if not base_tokenizer else None,
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


def _in_validation(document: str, fraction: float) -> bool:
    digest = hashlib.sha1(document.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") < fraction * 2**32


def _write_shards(store: ObjectStore, uri: str, split: str, tokens: np.ndarray) -> list[Shard]:
    shards = []
    for index, start in enumerate(range(0, max(len(tokens), 1), SHARD_TOKENS)):
        part = tokens[start : start + SHARD_TOKENS]
        name = f"{split}-{index:05d}.bin"
        store.write_bytes(join(uri, name), part.tobytes())
        shards.append(Shard(name=name, tokens=len(part)))
    return shards


def prepare_dataset(
    config: TrainingRunConfig, base_tokenizer: str = ""
) -> tuple[str, DataManifest]:
    """Prepare (or find prepared) shards; returns the cache folder and its manifest.

    `base_tokenizer` is the tokenizer.json of the model training continues from, if any."""
    dataset = config.dataset
    context = config.model.context_length
    source_store = open_store(dataset.source, config.storage)
    files = dataset_files(source_store, dataset.source, "dataset.source")
    validation_files: list[ObjectInfo] = []
    if dataset.validation.source:
        validation_files = dataset_files(
            open_store(dataset.validation.source, config.storage),
            dataset.validation.source,
            "dataset.validation.source",
        )
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
    read = _read_all(config, files)
    skipped: dict[str, int] = {}
    for result in read:
        for reason, count in result.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + count
    seen: set[bytes] = set()
    documents: list[str] = []
    duplicates = 0
    for result in read:
        for document in result.documents:
            digest = hashlib.sha1(document.encode(), usedforsecurity=False).digest()
            if dataset.preprocessing.dedupe and digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
            documents.append(document)
    if not documents:
        raise DataError(
            f"no documents left in {dataset.source} after preprocessing"
            + (f" (skipped: {_describe(skipped)})" if skipped else "")
            + "; check dataset.format, dataset.textField and preprocessing.minChars"
        )

    if validation_files:
        validation_docs = [d for r in _read_all(config, validation_files) for d in r.documents]
        train_docs = documents
        validation_from = "source"
    else:
        fraction = dataset.validation.fraction or DEFAULT_VALIDATION_FRACTION
        validation_docs = [d for d in documents if _in_validation(d, fraction)]
        train_docs = [d for d in documents if not _in_validation(d, fraction)]
        validation_from = "documents"

    tokenizer = (
        Tokenizer.from_str(base_tokenizer)
        if base_tokenizer
        else build_tokenizer(config.tokenizer, train_docs)
    )
    vocab_size = tokenizer.get_vocab_size()
    dtype = "uint16" if vocab_size <= 2**16 else "uint32"
    train = _tokenize_all(tokenizer, train_docs, dtype)
    validation = _tokenize_all(tokenizer, validation_docs, dtype)
    if len(validation) < context + 1 and not validation_files:
        # Too few held-out documents for one sequence: hold out the end of the stream instead.
        fraction = dataset.validation.fraction or DEFAULT_VALIDATION_FRACTION
        stream = np.concatenate([train, validation])
        cut = len(stream) - max(context + 1, int(len(stream) * fraction))
        train, validation = stream[:cut], stream[cut:]
        validation_from = "tokens"
    for split, tokens in (("training", train), ("validation", validation)):
        if len(tokens) < context + 1:
            raise DataError(
                f"the {split} split of {dataset.source} has {len(tokens):,} tokens, fewer than "
                f"one sequence of contextLength+1 = {context + 1:,}; add text or lower "
                "model.overrides.contextLength"
            )

    cache.write_bytes(join(cache_uri, TOKENIZER_FILE), tokenizer.to_str().encode())
    seconds = time.monotonic() - started
    total_bytes = sum(result.bytes_read for result in read)
    manifest = DataManifest(
        dtype=dtype,
        vocab_size=vocab_size,
        train=_write_shards(cache, cache_uri, "train", train),
        validation=_write_shards(cache, cache_uri, "validation", validation),
        validation_from=validation_from,
        stats=PreparationStats(
            files=len(files) + len(validation_files),
            bytes=total_bytes,
            documents=len(documents),
            duplicates=duplicates,
            skipped=skipped,
            train_tokens=len(train),
            validation_tokens=len(validation),
            seconds=seconds,
        ),
    )
    cache.write_bytes(manifest_uri, manifest.model_dump_json(indent=2).encode())
    log.info(
        "prepared %s documents (%d duplicates dropped%s) into %s train + %s validation tokens "
        "in %.1fs: %s bytes/s, %s tokens/s",
        f"{len(documents):,}",
        duplicates,
        f"; skipped {_describe(skipped)}" if skipped else "",
        f"{len(train):,}",
        f"{len(validation):,}",
        seconds,
        f"{total_bytes / max(seconds, 1e-9):,.0f}",
        f"{(len(train) + len(validation)) / max(seconds, 1e-9):,.0f}",
    )
    return cache_uri, manifest


def _describe(skipped: dict[str, int]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(skipped.items()))


def base_tokenizer_json(config: TrainingRunConfig) -> str:
    if config.base is None:
        return ""
    store = open_store(config.base, config.storage)
    return store.read_bytes(join(config.base, ARTIFACT_TOKENIZER_FILE)).decode()
