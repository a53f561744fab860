"""Preparing chat and instruction examples once: read and check every record (Ray tasks, one per
file), drop exact duplicates, hold out validation examples, render them with the pretrained
model's tokenizer and chat template (Ray tasks), and write token shards with a loss mask beside
each under `<cache>/tokens/<hash>/`. The hash covers the files, the tokenizer, the context length
and every option that changes the tokens."""

import hashlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import ray

from llmkube.api.runconfig import TrainingRunConfig
from llmkube.runtime.data.errors import DataError
from llmkube.runtime.data.examples import (
    ParsedRecords,
    Rendered,
    lay_out,
    parse_records,
    render,
)
from llmkube.runtime.data.manifest import MANIFEST_FILE, DataManifest, PreparationStats
from llmkube.runtime.data.prepare import cache_key, ray_get, source_files, write_shards
from llmkube.runtime.data.stages import DEFAULT_VALIDATION_FRACTION, split_documents
from llmkube.runtime.models.huggingface import load_tokenizer
from llmkube.storage import ObjectInfo, open_store
from llmkube.storage.uri import join

log = logging.getLogger(__name__)

EXAMPLES_FORMAT = 1
RENDER_BATCH = 512
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def tokenizer_files(folder: Path) -> dict[str, bytes]:
    """The model folder's files except its weights: what loads its tokenizer anywhere."""
    return {
        path.name: path.read_bytes()
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES)
    }


@ray.remote
def _read(config_wire: dict[str, object], uri: str, name: str) -> ParsedRecords:
    config = TrainingRunConfig.model_validate(config_wire)
    return parse_records(
        open_store(uri, config.storage).read_bytes(uri), config.dataset.format, name
    )


@ray.remote
def _render(
    files: dict[str, bytes], documents: list[str], file_format: str, train_on_prompt: bool
) -> list[Rendered]:
    with tempfile.TemporaryDirectory(prefix="llmkube-tokenizer-") as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        tokenizer = load_tokenizer(Path(folder))
        return [render(tokenizer, doc, file_format, train_on_prompt) for doc in documents]


def _read_all(config: TrainingRunConfig, files: list[ObjectInfo], source: str) -> ParsedRecords:
    wire = config.model_dump(mode="json", by_alias=True)
    parts = ray_get(
        [_read.remote(wire, info.uri, info.uri.removeprefix(source).lstrip("/")) for info in files]
    )
    merged = ParsedRecords()
    for part in parts:
        merged.documents.extend(part.documents)
        merged.invalid += part.invalid
        merged.problems.extend(part.problems[: 5 - len(merged.problems)])
    return merged


def _check_records(parsed: ParsedRecords, source: str, skip: bool) -> None:
    if not parsed.invalid:
        return
    total = parsed.invalid + len(parsed.documents)
    listed = "\n  ".join(parsed.problems)
    counted = f"{parsed.invalid:,} of {total:,} records in {source} are invalid:\n  {listed}"
    if not skip:
        raise DataError(
            f"{counted}\nfix them, or set dataset.skipInvalidRecords: true to train on the rest"
        )
    if not parsed.documents:
        raise DataError(f"{counted}\nno valid record is left to train on")
    log.warning("skipping %s", counted)


def _dedupe(documents: list[str]) -> tuple[list[str], int]:
    seen: set[bytes] = set()
    kept = []
    for document in documents:
        digest = hashlib.sha1(document.encode(), usedforsecurity=False).digest()
        if digest not in seen:
            seen.add(digest)
            kept.append(document)
    return kept, len(documents) - len(kept)


def hold_out_examples(documents: list[str], fraction: float | None) -> tuple[list[str], list[str]]:
    """(train, validation) examples: held out by content hash, or, when that leaves none, the
    last ones (at least one), so a small dataset still evaluates."""
    train, validation = split_documents(documents, fraction)
    if validation or len(documents) < 2:
        return train, validation
    count = max(1, int(len(documents) * (fraction or DEFAULT_VALIDATION_FRACTION)))
    return documents[:-count], documents[-count:]


def _batches(documents: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(documents), RENDER_BATCH):
        yield documents[start : start + RENDER_BATCH]


def _render_all(
    config: TrainingRunConfig, files: dict[str, bytes], documents: list[str]
) -> list[Rendered]:
    dataset = config.dataset
    parts = ray_get(
        [
            _render.remote(files, batch, dataset.format, dataset.train_on_prompt)
            for batch in _batches(documents)
        ]
    )
    return [rendered for part in parts for rendered in part]


def prepare_examples(
    config: TrainingRunConfig, model_folder: Path, context_length: int
) -> tuple[str, DataManifest]:
    """Prepare (or find prepared) example shards for a fine-tune of the model in
    `model_folder`; returns the cache folder and its manifest."""
    dataset = config.dataset
    tokenizer = load_tokenizer(model_folder)
    files_of_tokenizer = tokenizer_files(model_folder)
    files, validation_files = source_files(config)
    key = cache_key(
        config,
        [*files, *validation_files],
        hashlib.sha256(b"".join(files_of_tokenizer.values())).hexdigest(),
        examples=EXAMPLES_FORMAT,
        context_length=context_length,
    )
    assert dataset.cache is not None, "the run config resolves the cache location"
    cache_uri = join(dataset.cache, "tokens", key)
    cache = open_store(cache_uri, config.storage)
    manifest_uri = join(cache_uri, MANIFEST_FILE)
    if cache.exists(manifest_uri):
        manifest = DataManifest.model_validate_json(cache.read_bytes(manifest_uri))
        log.info("examples already prepared at %s: %s", cache_uri, f"{manifest.examples:,}")
        return cache_uri, manifest

    started = time.monotonic()
    log.info(
        "preparing %s examples from %d file(s) in %s", dataset.format, len(files), dataset.source
    )
    parsed = _read_all(config, files, dataset.source)
    _check_records(parsed, dataset.source, dataset.skip_invalid_records)
    documents, duplicates = (
        _dedupe(parsed.documents)
        if dataset.preprocessing.dedupe
        else (
            parsed.documents,
            0,
        )
    )
    if validation_files:
        assert dataset.validation.source is not None
        held = _read_all(config, validation_files, dataset.validation.source)
        _check_records(held, dataset.validation.source, dataset.skip_invalid_records)
        train_docs, validation_docs, validation_from = documents, held.documents, "source"
    else:
        train_docs, validation_docs = hold_out_examples(documents, dataset.validation.fraction)
        validation_from = "documents"
    if not train_docs or not validation_docs:
        raise DataError(
            f"{dataset.source} has {len(documents)} distinct example(s): too few to both train "
            "and evaluate; add examples or give dataset.validation.source"
        )

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dtype = "uint16" if len(tokenizer) <= 2**16 else "uint32"
    written = {}
    layouts = {}
    for split, docs in (("train", train_docs), ("validation", validation_docs)):
        layout = lay_out(
            _render_all(config, files_of_tokenizer, docs),
            context_length=context_length,
            packing=dataset.packing,
            pad_id=pad_id,
            dtype=dtype,
        )
        if len(layout.tokens) < context_length + 1:
            raise DataError(
                f"the {split} examples of {dataset.source} hold {len(layout.tokens):,} tokens, "
                f"fewer than one sequence of contextLength + 1 = {context_length + 1:,}; add "
                "examples, or turn dataset.packing off"
            )
        layouts[split] = layout
        written[split] = write_shards(
            cache, cache_uri, split, layout.tokens, layout.loss, layout.row_tokens or 1
        )
    truncated = sum(layout.truncated for layout in layouts.values())
    dropped = sum(layout.dropped for layout in layouts.values())
    skipped = {"invalid record": parsed.invalid} if parsed.invalid else {}
    if truncated:
        skipped["cut at contextLength (kept)"] = truncated
    if dropped:
        skipped["no answer left within contextLength"] = dropped
    manifest = DataManifest(
        dtype=dtype,
        vocab_size=len(tokenizer),
        train=written["train"],
        validation=written["validation"],
        validation_from=validation_from,
        stats=PreparationStats(
            files=len(files) + len(validation_files),
            bytes=sum(info.size for info in [*files, *validation_files]),
            documents=len(train_docs) + len(validation_docs),
            duplicates=duplicates,
            skipped=skipped,
            train_tokens=len(layouts["train"].tokens),
            validation_tokens=len(layouts["validation"].tokens),
            seconds=time.monotonic() - started,
        ),
        masked=True,
        row_tokens=layouts["train"].row_tokens,
        examples=len(train_docs) + len(validation_docs),
    )
    cache.write_bytes(manifest_uri, manifest.model_dump_json(indent=2).encode())
    loss_tokens = int(layouts["train"].loss.sum())
    log.info(
        "prepared %s train + %s validation examples (%d duplicates dropped%s) in %.1fs: "
        "%s train tokens, %s of them answers that carry loss",
        f"{len(train_docs):,}",
        f"{len(validation_docs):,}",
        duplicates,
        "".join(f"; {count} {reason}" for reason, count in skipped.items()),
        manifest.stats.seconds,
        f"{manifest.stats.train_tokens:,}",
        f"{loss_tokens:,}",
    )
    return cache_uri, manifest
