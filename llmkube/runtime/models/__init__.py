"""The model interface training, evaluation and serving use: build from config, forward with a
KV cache, save/load. Nothing outside this package names a model class."""

from typing import Protocol

import torch
from torch import Tensor, nn

from llmkube.api.runconfig import GptConfig
from llmkube.runtime.models.gpt import GPT, KVCache


class CausalLM(Protocol):
    """A decoder-only language model."""

    @property
    def context_length(self) -> int: ...

    def new_cache(
        self, batch_size: int, capacity: int | None = None, *, device: torch.device | None = None
    ) -> KVCache: ...

    def __call__(
        self,
        tokens: Tensor,
        cache: KVCache | None = None,
        *,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor: ...


def build_model(config: GptConfig) -> nn.Module:
    """A freshly initialised model for `config` (the architecture field picks the class)."""
    if config.architecture == "gpt":
        return GPT(config)
    raise ValueError(f"unknown architecture {config.architecture!r}")


__all__ = ["CausalLM", "KVCache", "build_model"]
