"""The serving engine's slotted KV cache as a `transformers` `Cache`, so Hugging Face models
decode rows of different lengths in one batch exactly as llmkube's GPT does.

The engine preallocates one tensor per layer for keys and one for values, [slots, kv heads,
capacity, head dim], and keeps each running sequence in a slot of its own. A model's attention
calls `update(keys, values, layer)` with the new tokens' keys and values; here each row is
written at its own positions into its slot, and the attention then reads the first `span`
positions of those slots (the 4D mask says which of them each query sees)."""

from typing import Any

import torch
import transformers
from torch import Tensor

from llmkube.runtime.models.base import KVCache


class SlotCache(KVCache):
    """A `KVCache` whose tensors a transformers model writes through `view`."""

    def __init__(self, keys: list[Tensor], values: list[Tensor]) -> None:
        super().__init__(keys=keys, values=values)
        self.view = _TransformersView(self)
        self.rows = slice(0, 0)
        self.positions: Tensor | None = None
        self.span = 0

    def prepare(self, batch: int, positions: Tensor, span: int) -> None:
        """Where the next forward pass writes (`positions` [batch, steps]) and how much of each
        slot its attention reads."""
        first = self.first_row or 0
        self.rows = slice(first, first + batch)
        self.positions = positions
        self.span = span

    def write(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        assert self.positions is not None, "prepare() before the forward pass"
        batch, steps = self.positions.shape
        rows = torch.arange(self.rows.start, self.rows.stop, device=keys.device)
        rows = rows[:, None].expand(batch, steps)
        # [batch, heads, steps, dim] -> [batch, steps, heads, dim], indexed per (row, position).
        self.keys[layer][rows, :, self.positions] = keys.transpose(1, 2).to(self.keys[layer].dtype)
        self.values[layer][rows, :, self.positions] = values.transpose(1, 2).to(
            self.values[layer].dtype
        )
        return (
            self.keys[layer][self.rows, :, : self.span],
            self.values[layer][self.rows, :, : self.span],
        )


class _TransformersView(transformers.Cache):
    """What the transformers model sees: `update` writes into the owner's slots."""

    def __init__(self, owner: SlotCache) -> None:
        super().__init__(layers=[])
        self.owner = owner

    def update(
        self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        return self.owner.write(layer_idx, key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Positions and the mask always come from the caller, so this only answers questions
        # transformers asks in passing.
        return self.owner.span
