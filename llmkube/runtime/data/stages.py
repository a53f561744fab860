"""The pure stages of preparing a dataset (prepare.py runs them between reading the files and
writing the shards): merge what the files yielded and drop exact duplicates, split off the
validation documents, and make sure each split holds at least one sequence."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from llmkube.runtime.data.documents import FileDocuments
from llmkube.runtime.data.errors import DataError

DEFAULT_VALIDATION_FRACTION = 0.05


@dataclass
class Cleaned:
    documents: list[str] = field(default_factory=list)
    duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason → count over all files."""
    bytes_read: int = 0


def merge_documents(read: Sequence[FileDocuments], *, dedupe: bool) -> Cleaned:
    """Every file's documents in order; with `dedupe`, each exact text only once."""
    cleaned = Cleaned()
    seen: set[bytes] = set()
    for result in read:
        cleaned.bytes_read += result.bytes_read
        for reason, count in result.skipped.items():
            cleaned.skipped[reason] = cleaned.skipped.get(reason, 0) + count
        for document in result.documents:
            digest = hashlib.sha1(document.encode(), usedforsecurity=False).digest()
            if dedupe and digest in seen:
                cleaned.duplicates += 1
                continue
            seen.add(digest)
            cleaned.documents.append(document)
    return cleaned


def in_validation(document: str, fraction: float) -> bool:
    """Whether a document is held out: decided by its text alone, so a re-run agrees."""
    digest = hashlib.sha1(document.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") < fraction * 2**32


def split_documents(documents: list[str], fraction: float | None) -> tuple[list[str], list[str]]:
    """(train, validation) documents when no separate validation source is given."""
    share = fraction or DEFAULT_VALIDATION_FRACTION
    validation = [d for d in documents if in_validation(d, share)]
    train = [d for d in documents if not in_validation(d, share)]
    return train, validation


def hold_out_tail(
    train: np.ndarray, validation: np.ndarray, context: int, fraction: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Too few held-out documents for one sequence: hold out the end of the token stream
    instead, at least one sequence of it."""
    share = fraction or DEFAULT_VALIDATION_FRACTION
    stream = np.concatenate([train, validation])
    cut = len(stream) - max(context + 1, int(len(stream) * share))
    return stream[:cut], stream[cut:]


def check_split_sizes(splits: dict[str, np.ndarray], context: int, source: str) -> None:
    for split, tokens in splits.items():
        if len(tokens) < context + 1:
            raise DataError(
                f"the {split} split of {source} has {len(tokens):,} tokens, fewer than "
                f"one sequence of contextLength+1 = {context + 1:,}; add text or lower "
                "model.overrides.contextLength"
            )
