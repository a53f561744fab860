"""Pretrained Hugging Face models behind the `CausalLM` interface, so the training loop,
evaluation and sample generation treat them like llmkube's GPT.

Only allowlisted architectures load, from a local folder, never from a model hub and never with
remote code: `check_model_config` refuses anything else before a weight is read."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from torch import Tensor
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)

from llmkube.runtime.models.base import CausalLM, KVCache
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface_config import (
    ARCHITECTURES,
    DEFAULT_LORA_TARGETS,
    DROPOUT_FIELDS,
    MODEL_CONFIG_FILE,
    HuggingFaceConfig,
    check_model_config,
)
from llmkube.runtime.models.slot_cache import SlotCache

BASE_ADAPTER = "__base__"
"""peft's name for \"no adapter\" in a mixed batch."""

transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_pretrained(
    folder: Path, model_type: str, *, dropout: float | None = None
) -> PreTrainedModel:
    """The model in `folder`, in fp32 (autocast makes bf16 on GPUs), from local files only."""
    overrides: dict[str, Any] = {}
    if dropout is not None:
        overrides = dict.fromkeys(DROPOUT_FIELDS[model_type], dropout)
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
        folder,
        local_files_only=True,
        trust_remote_code=False,
        dtype=torch.float32,
        **overrides,
    )
    return model


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer in `folder` (transformers'), from local files only."""
    return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)


def meta_model(folder: Path) -> PreTrainedModel:
    """The model in `folder` built on the meta device: its layers without any weights, to
    check a fine-tune's settings before anything is loaded."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        model: PreTrainedModel = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    return model


class HuggingFaceLM(CausalLM):
    """A transformers causal LM (or a peft model wrapping one) as a `CausalLM`. Its KV cache is
    the engine's slotted cache (slot_cache.py), so serving batches rows of different lengths,
    and each row may name a LoRA adapter of its own (peft's mixed-batch inference)."""

    def __init__(self, model: torch.nn.Module, config: HuggingFaceConfig) -> None:
        super().__init__()
        self.inner = model
        self.config = config

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def new_cache(
        self, batch_size: int, capacity: int | None = None, *, device: torch.device | None = None
    ) -> KVCache:
        settings: Any = self.inner.config
        heads = int(settings.num_attention_heads)
        kv_heads = int(getattr(settings, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(settings, "head_dim", None) or settings.hidden_size // heads)
        parameter = next(self.inner.parameters())
        shape = (batch_size, kv_heads, capacity or self.context_length, head_dim)
        make = [
            torch.zeros(shape, dtype=parameter.dtype, device=device or parameter.device)
            for _ in range(2 * self.config.n_layer)
        ]
        return SlotCache(keys=make[::2], values=make[1::2])

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
        extra: dict[str, Any] = {}
        if adapters is not None:
            extra["adapter_names"] = [name or BASE_ADAPTER for name in adapters]
        elif positions is not None and isinstance(self.inner, peft.PeftModel):
            # The engine's rows that name no adapter are the base model's; without names peft
            # would apply its active adapter (what training and its samples want) to them.
            extra["adapter_names"] = [BASE_ADAPTER] * tokens.shape[0]
        if cache is None:
            out = self.inner(input_ids=tokens, use_cache=False, **extra)
            logits: Tensor = out.logits
            return logits
        assert isinstance(cache, SlotCache), "a cache from this model's new_cache"
        batch, steps = tokens.shape
        if positions is None:  # lockstep: every row continues from the cache's length
            start = cache.length
            if start + steps > cache.capacity:
                raise ValueError(f"{start + steps} positions exceed the cache's {cache.capacity}")
            positions = torch.arange(start, start + steps, device=tokens.device)[None]
            positions = positions.expand(batch, -1)
            causal = torch.ones(steps, start + steps, dtype=torch.bool, device=tokens.device)
            mask = causal.tril(start)[None, None].expand(batch, 1, -1, -1)
            cache.length += steps
        assert mask is not None, "positions come with a mask"
        cache.prepare(batch, positions, mask.shape[-1])
        dtype = cache.keys[0].dtype
        additive = torch.zeros(mask.shape, dtype=dtype, device=tokens.device)
        additive.masked_fill_(~mask, torch.finfo(dtype).min)
        keep: Tensor | int = 0
        if logits_at is not None:
            keep, picked = torch.unique(logits_at, return_inverse=True)
        out = self.inner(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=additive,
            past_key_values=cache.view,
            use_cache=True,
            logits_to_keep=keep,
            **extra,
        )
        logits = out.logits
        if logits_at is not None:
            logits = logits[torch.arange(batch, device=logits.device), picked][:, None]
        return logits

    def add_adapter(self, name: str, folder: Path) -> None:
        """Load the LoRA adapter in `folder` under `name` (the first one wraps the model in
        peft's); requests then pick it per row."""
        if isinstance(self.inner, peft.PeftModel):
            self.inner.load_adapter(str(folder), adapter_name=name, is_trainable=False)
        else:
            self.inner = peft.PeftModel.from_pretrained(
                self.inner, str(folder), adapter_name=name, is_trainable=False
            )
        self.inner.eval()

    def merge_adapters(self) -> None:
        """Fold the LoRA adapters into the base's weights (an export's graph has no peft)."""
        if isinstance(self.inner, peft.PeftModel):
            self.inner = self.inner.merge_and_unload()

    def remove_adapter(self, name: str) -> None:
        assert isinstance(self.inner, peft.PeftModel), "an adapter was added"
        self.inner.delete_adapter(name)

    def trainable_state(self) -> dict[str, Tensor]:
        """What a checkpoint holds: the weights that train (a LoRA run's adapters only), each
        tensor once (tied embeddings share one)."""
        state: dict[str, Tensor] = {}
        seen: set[int] = set()
        for name, parameter in self.named_parameters():
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                state[name] = parameter.detach().to("cpu").contiguous()
        return state

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        parameters = dict(self.named_parameters())
        unknown = sorted(set(state) - set(parameters))
        if unknown:
            raise ModelError(f"checkpoint weights the model does not have: {unknown[:5]}")
        with torch.no_grad():
            for name, tensor in state.items():
                parameters[name].copy_(tensor)

    @property
    def hf_model(self) -> torch.nn.Module:
        """The transformers (or peft) model itself, for saving in its own format."""
        return self.inner


__all__ = [
    "ARCHITECTURES",
    "DEFAULT_LORA_TARGETS",
    "MODEL_CONFIG_FILE",
    "HuggingFaceConfig",
    "HuggingFaceLM",
    "check_model_config",
    "load_pretrained",
    "load_tokenizer",
    "meta_model",
]
