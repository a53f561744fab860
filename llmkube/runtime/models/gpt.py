"""llmkube's GPT: a decoder-only transformer you can read top to bottom.

Pre-LayerNorm blocks, causal scaled_dot_product_attention (flash/memory-efficient kernels where
the device has them), a GELU MLP, dropout, and the output projection tied to the token embedding.
Decoding uses a preallocated KV cache; serving passes explicit positions and an attention mask
so sequences of different lengths can share one batch.
"""

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmkube.api.runconfig import GptConfig
from llmkube.runtime.models.base import CausalLM, KVCache
from llmkube.runtime.models.errors import ModelError


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.d_model // config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        cache: KVCache | None,
        layer: int,
        mask: Tensor | None,
        positions: Tensor | None,
    ) -> Tensor:
        batch, steps, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (
            t.view(batch, steps, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v)
        )
        if cache is not None and cache.first_row is not None:
            assert positions is not None, "a slotted cache needs positions"
            assert mask is not None, "a slotted cache needs a mask"
            first, span = cache.first_row, mask.shape[-1]
            rows = torch.arange(first, first + batch, device=x.device)[:, None].expand(-1, steps)
            cache.keys[layer][rows, :, positions] = k.transpose(1, 2)
            cache.values[layer][rows, :, positions] = v.transpose(1, 2)
            k = cache.keys[layer][first : first + batch, :, :span]
            v = cache.values[layer][first : first + batch, :, :span]
        elif cache is not None:
            start = cache.length
            cache.keys[layer][:batch, :, start : start + steps] = k
            cache.values[layer][:batch, :, start : start + steps] = v
            k = cache.keys[layer][:batch, :, : start + steps]
            v = cache.values[layer][:batch, :, : start + steps]
        dropout = self.dropout if self.training else 0.0
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        elif cache is None or cache.length == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=steps > 1, dropout_p=dropout)
        else:
            # New tokens see the whole cache and each other causally.
            causal = torch.ones(steps, k.shape[2], dtype=torch.bool, device=x.device).tril(
                k.shape[2] - steps
            )
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(batch, steps, width)
        out: Tensor = self.resid_dropout(self.proj(y))
        return out


class MLP(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, 4 * config.d_model)
        self.down = nn.Linear(4 * config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.dropout(self.down(F.gelu(self.up(x))))
        return out


class Block(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        cache: KVCache | None,
        layer: int,
        mask: Tensor | None,
        positions: Tensor | None,
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, mask, positions)
        out: Tensor = x + self.mlp(self.ln_2(x))
        return out


class GPT(CausalLM):
    tied_weights: ClassVar[dict[str, str]] = {"lm_head.weight": "token_embedding.weight"}

    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.context_length, config.d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        # GPT-2's scaling of the residual projections by depth keeps activations in range.
        for name, parameter in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def new_cache(
        self, batch_size: int, capacity: int | None = None, *, device: torch.device | None = None
    ) -> KVCache:
        parameter = self.lm_head.weight
        shape = (
            batch_size,
            self.config.n_head,
            capacity or self.config.context_length,
            self.config.d_model // self.config.n_head,
        )
        make = [
            torch.zeros(shape, dtype=parameter.dtype, device=device or parameter.device)
            for _ in range(2 * self.config.n_layer)
        ]
        return KVCache(keys=make[::2], values=make[1::2])

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
        """Logits for every position of `tokens` [batch, steps] (or only at `logits_at`); with a
        cache, appends to it."""
        if adapters is not None and any(adapters):
            raise ModelError("llmkube's GPT has no LoRA adapters")
        steps = tokens.shape[1]
        start = cache.length if cache is not None else 0
        if positions is None:
            if start + steps > self.config.context_length:
                raise ValueError(
                    f"{start + steps} positions exceed the context length "
                    f"{self.config.context_length}"
                )
            positions = torch.arange(start, start + steps, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer, mask, positions)
        if cache is not None and cache.first_row is None:
            cache.length += steps
        if logits_at is not None:
            x = x[torch.arange(x.shape[0], device=x.device), logits_at][:, None]
        logits: Tensor = self.lm_head(self.ln_f(x))
        return logits
