"""Token shards as training and validation batches.

The token stream is cut into non-overlapping sequences of contextLength+1 tokens. Each epoch
visits them in a seeded permutation; sample j of the run is fully determined by j, so a worker
knows its batch for any step without state, and a resumed run sees exactly the data it would
have seen. Within a step, worker r takes samples r, r+W, r+2W, ...: disjoint ranges."""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from llmkube.runtime.data.manifest import DataManifest, Shard
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join, local_path


def _open_shards(
    store: ObjectStore, cache_uri: str, shards: list[Shard], dtype: str, scratch: Path
) -> list[np.ndarray]:
    if cache_uri.startswith("file://"):
        folder = local_path(cache_uri)
    else:
        folder = scratch
        for shard in shards:
            path = folder / shard.name
            if not path.exists() or path.stat().st_size != shard.tokens * np.dtype(dtype).itemsize:
                path.write_bytes(store.read_bytes(join(cache_uri, shard.name)))
    return [np.memmap(folder / shard.name, dtype=dtype, mode="r") for shard in shards]


@dataclass
class Sequences:
    """The non-overlapping (contextLength+1)-token sequences of one split."""

    shards: list[np.ndarray]
    context_length: int

    def __post_init__(self) -> None:
        counts = [max(0, (len(shard) - 1) // self.context_length) for shard in self.shards]
        self.starts = np.cumsum([0, *counts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def get(self, index: int) -> np.ndarray:
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        offset = (index - int(self.starts[shard])) * self.context_length
        return self.shards[shard][offset : offset + self.context_length + 1]

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([self.get(index).astype(np.int64) for index in indices])
        tokens = torch.from_numpy(rows)
        return tokens[:, :-1], tokens[:, 1:]


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


def open_splits(
    store: ObjectStore,
    cache_uri: str,
    manifest: DataManifest,
    context_length: int,
    scratch: Path,
) -> tuple[Sequences, Sequences]:
    """Training and validation sequences; s3:// shards are first copied into `scratch`."""
    return tuple(  # type: ignore[return-value]
        Sequences(_open_shards(store, cache_uri, shards, manifest.dtype, scratch), context_length)
        for shards in (manifest.train, manifest.validation)
    )
