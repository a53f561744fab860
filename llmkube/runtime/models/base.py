"""The interface every model implements, so training, evaluation and serving never name a
model class: build from config, forward with a KV cache, save/load (see artifact.py)."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn


@dataclass
class KVCache:
    """Keys and values of every layer, preallocated to `capacity` positions."""

    keys: list[Tensor]
    """Per layer: [slots, heads, capacity, head_dim]."""
    values: list[Tensor]
    length: int = 0
    """Positions filled so far, when every row is one sequence filled in lockstep."""
    first_row: int | None = None
    """Slotted use (the serving engine): batch row i is cache slot first_row + i. The forward
    call then writes each row's keys and values at its own `positions` and attends over the
    first `mask.shape[-1]` positions of its slot; `length` is not used."""

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(all, trainable) parameters, each tensor counted once (tied weights share one)."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique), sum(p.numel() for p in unique if p.requires_grad)


class CausalLM(nn.Module, ABC):
    """A decoder-only language model."""

    tied_weights: ClassVar[dict[str, str]] = {}
    """Parameters that share another's tensor (name -> the name stored): saved once."""

    def trainable_state(self) -> dict[str, Tensor]:
        """The weights a checkpoint holds, on the CPU: every trained tensor, once."""
        return {
            name: tensor.detach().to("cpu").contiguous()
            for name, tensor in self.state_dict().items()
            if name not in self.tied_weights
        }

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Load what `trainable_state` returned; a ValueError when it does not fit."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        untied = set(missing) - set(self.tied_weights)
        if untied or unexpected:
            raise ValueError(
                f"weights do not match the model config: missing {sorted(untied)}, "
                f"unexpected {sorted(unexpected)}"
            )

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Longest sequence in tokens."""

    @abstractmethod
    def new_cache(
        self, batch_size: int, capacity: int | None = None, *, device: torch.device | None = None
    ) -> KVCache:
        """An empty KV cache for `batch_size` rows of up to `capacity` positions."""

    @abstractmethod
    def forward(
        self,
        tokens: Tensor,
        cache: KVCache | None = None,
        *,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        logits_at: Tensor | None = None,
        adapters: Sequence[str | None] | None = None,
    ) -> Tensor:
        """Logits for every position of `tokens` [batch, steps]. With a cache, attends to what it
        holds and appends the new keys and values. `positions` [batch, steps] and a boolean
        attention `mask` [batch, 1, steps, cached + steps] let rows of different lengths share a
        batch; without them positions continue from the cache and attention is causal.
        `logits_at` [batch] picks one step per row: logits [batch, 1, vocab] for it alone (a
        prefill needs only the last prompt token's, and the output projection is the costly
        part of a wide vocabulary). `adapters` names each row's LoRA adapter (None: the model
        itself); a model without adapters refuses names."""
