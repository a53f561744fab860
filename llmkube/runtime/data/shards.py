"""Token shards as training and validation batches.

The token stream is cut into non-overlapping sequences of contextLength+1 tokens (or, for
examples prepared one per row, into those rows). Where the data has a loss mask (chat and
instruction examples), targets that carry no loss are IGNORED. Each epoch
visits them in a seeded permutation; sample j of the run is fully determined by j, so a worker
knows its batch for any step without state, and a resumed run sees exactly the data it would
have seen. Within a step, worker r takes samples r, r+W, r+2W, ...: disjoint ranges."""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from llmkube.runtime.data.examples import IGNORED
from llmkube.runtime.data.manifest import DataManifest, Shard, loss_shard
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join, local_path


def _open_shards(
    store: ObjectStore,
    cache_uri: str,
    names: list[tuple[str, int]],
    dtype: str,
    scratch: Path,
) -> list[np.ndarray]:
    """Memory maps of the named (name, items) shard files."""
    if cache_uri.startswith("file://"):
        folder = local_path(cache_uri)
    else:
        folder = scratch
        for name, items in names:
            path = folder / name
            if not path.exists() or path.stat().st_size != items * np.dtype(dtype).itemsize:
                path.write_bytes(store.read_bytes(join(cache_uri, name)))
    return [np.memmap(folder / name, dtype=dtype, mode="r") for name, _ in names]


@dataclass
class Sequences:
    """The (contextLength+1)-token sequences of one split: cut from a stream overlapping by one
    token, or whole rows of that length."""

    shards: list[np.ndarray]
    context_length: int
    losses: list[np.ndarray] | None = None
    """Per shard, 1 where a token carries loss as a target; None: every token does."""
    rows: bool = False
    """Whether the shards hold padded rows of contextLength+1 tokens (one example each)."""

    def __post_init__(self) -> None:
        span = self.context_length + 1
        self.stride = span if self.rows else self.context_length
        counts = [
            len(shard) // span if self.rows else max(0, (len(shard) - 1) // self.context_length)
            for shard in self.shards
        ]
        self.starts = np.cumsum([0, *counts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return shard, (index - int(self.starts[shard])) * self.stride

    def get(self, index: int) -> np.ndarray:
        shard, offset = self._locate(index)
        return self.shards[shard][offset : offset + self.context_length + 1]

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) [rows, steps]; targets that carry no loss are IGNORED. Rows of
        examples are cut after the batch's last target that counts: the rest is padding."""
        tokens = torch.from_numpy(np.stack([self.get(index).astype(np.int64) for index in indices]))
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if self.losses is None:
            return inputs, targets
        located = [self._locate(index) for index in indices]
        span = self.context_length + 1
        loss = torch.from_numpy(
            np.stack([self.losses[s][o : o + span].astype(np.bool_) for s, o in located])
        )[:, 1:]
        targets = targets.masked_fill(~loss, IGNORED)
        if self.rows:
            counted = loss.any(dim=0).nonzero()
            steps = int(counted[-1]) + 1 if len(counted) else 1
            inputs, targets = inputs[:, :steps], targets[:, :steps]
        return inputs, targets


class TrainingBatches:
    def __init__(
        self,
        sequences: Sequences,
        *,
        batch_size: int,
        accumulation: int,
        workers: int,
        seed: int,
    ) -> None:
        self.sequences = sequences
        self.batch_size = batch_size
        self.accumulation = accumulation
        self.workers = workers
        self.seed = seed

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.accumulation * self.workers

    @lru_cache(maxsize=2)  # noqa: B019 - one permutation per epoch, two alive at a boundary
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.sequences))

    def epoch_at(self, step: int) -> float:
        return step * self.samples_per_step / len(self.sequences)

    def batch(self, step: int, micro: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        first = (step * self.accumulation + micro) * self.batch_size * self.workers
        samples = [first + rank + row * self.workers for row in range(self.batch_size)]
        count = len(self.sequences)
        return self.sequences.batch(
            [int(self._order(sample // count)[sample % count]) for sample in samples]
        )


def _split(
    store: ObjectStore,
    cache_uri: str,
    manifest: DataManifest,
    shards: list[Shard],
    context_length: int,
    scratch: Path,
) -> Sequences:
    tokens = _open_shards(
        store, cache_uri, [(s.name, s.tokens) for s in shards], manifest.dtype, scratch
    )
    losses = None
    if manifest.masked:
        losses = _open_shards(
            store, cache_uri, [(loss_shard(s.name), s.tokens) for s in shards], "uint8", scratch
        )
    return Sequences(tokens, context_length, losses, rows=manifest.row_tokens is not None)


def open_splits(
    store: ObjectStore,
    cache_uri: str,
    manifest: DataManifest,
    context_length: int,
    scratch: Path,
) -> tuple[Sequences, Sequences]:
    """Training and validation sequences; s3:// shards are first copied into `scratch`."""
    if manifest.row_tokens is not None and manifest.row_tokens != context_length + 1:
        raise ValueError(
            f"the data was prepared in rows of {manifest.row_tokens} tokens, not "
            f"contextLength + 1 = {context_length + 1}"
        )
    return (
        _split(store, cache_uri, manifest, manifest.train, context_length, scratch),
        _split(store, cache_uri, manifest, manifest.validation, context_length, scratch),
    )
