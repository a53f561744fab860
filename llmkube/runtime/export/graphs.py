"""The modules torch.onnx exports: one decoder step with its KV cache as plain tensors.

Both graphs share one signature, `(input_ids, attention_mask, *past) -> (logits, *present)`:
the prefill graph has no past, the decode graph one (key, value) pair per layer. The attention
mask covers past and new tokens (1 real, 0 padding), so rows of different lengths share a batch
when padded on the left; positions are counted from it, as a row alone would number them.

The serving engine's models write into preallocated caches in place, which torch.export cannot
trace with dynamic lengths; these wrappers concatenate instead, calling the same modules."""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache, PreTrainedModel

from llmkube.runtime.models import CausalLM
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.gpt import GPT, Block
from llmkube.runtime.models.huggingface import HuggingFaceLM


@dataclass(frozen=True)
class CacheLayout:
    """The shape of the KV cache the graphs take and return: per layer, keys and values of
    [batch, kv_heads, positions, head_dim]."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int


def past_names(layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{layer}.{part}" for layer in range(layers) for part in ("key", "value")]


def positions_of(attention_mask: Tensor, past_length: int) -> Tensor:
    """The position of each new token: how many real tokens its row has before it."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, past_length:]


class DecoderGraph(nn.Module, ABC):
    layout: CacheLayout

    @abstractmethod
    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor
    ) -> tuple[Tensor, ...]:
        """(logits [batch, steps, vocab], then each layer's present key and value)."""


class GptGraph(DecoderGraph):
    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.layout = CacheLayout(
            config.n_layer, config.n_head, config.d_model // config.n_head, config.vocab_size
        )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor
    ) -> tuple[Tensor, ...]:
        model = self.model
        batch, steps = input_ids.shape
        past_length = past[0].shape[2] if past else 0
        queries = torch.arange(steps, device=input_ids.device)[:, None] + past_length
        keys = torch.arange(past_length + steps, device=input_ids.device)[None, :]
        # Causal and not padding; every token also sees itself, so a padding row attends to
        # something (all-masked rows would give NaN, which padding keys would then spread).
        visible = (keys <= queries)[None] & attention_mask.bool()[:, None, :]
        mask = (visible | (keys == queries)[None])[:, None]
        x = model.token_embedding(input_ids) + model.position_embedding(
            positions_of(attention_mask, past_length)
        )
        present: list[Tensor] = []
        for layer, block in enumerate(model.blocks):
            assert isinstance(block, Block)
            attention = block.attn
            h = block.ln_1(x)
            q, k, v = (
                t.view(batch, steps, attention.n_head, attention.head_dim).transpose(1, 2)
                for t in attention.qkv(h).split(h.shape[-1], dim=2)
            )
            if past:
                k = torch.cat([past[2 * layer], k], dim=2)
                v = torch.cat([past[2 * layer + 1], v], dim=2)
            present += [k, v]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + attention.proj(y.transpose(1, 2).reshape(batch, steps, -1))
            x = x + block.mlp(block.ln_2(x))
        return (model.lm_head(model.ln_f(x)), *present)


class HuggingFaceGraph(DecoderGraph):
    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        # SDPA's is_causal is decided from the sequence length, which torch.export cannot hold
        # as a Python bool; eager attention masks explicitly and exports with dynamic lengths.
        model.set_attn_implementation("eager")
        self.model = model
        settings: Any = model.config
        heads = int(settings.num_attention_heads)
        self.layout = CacheLayout(
            layers=int(settings.num_hidden_layers),
            kv_heads=int(getattr(settings, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(settings, "head_dim", None) or settings.hidden_size // heads),
            vocab_size=int(settings.vocab_size),
        )

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor
    ) -> tuple[Tensor, ...]:
        cache = DynamicCache()
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        past_length = past[0].shape[2] if past else 0
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions_of(attention_mask, past_length),
            past_key_values=cache,
            use_cache=True,
        )
        present: list[Tensor] = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def decoder_graph(model: CausalLM) -> DecoderGraph:
    """The exportable form of a loaded model (a LoRA adapter already merged into its base)."""
    if isinstance(model, GPT):
        return GptGraph(model).eval()
    if isinstance(model, HuggingFaceLM) and isinstance(model.hf_model, PreTrainedModel):
        return HuggingFaceGraph(model.hf_model).eval()
    raise ModelError(f"{type(model).__name__} cannot be exported to ONNX")
