"""Pretrained Hugging Face models behind the `CausalLM` interface, so the training loop,
evaluation and sample generation treat them like llmkube's GPT.

Only allowlisted architectures load, from a local folder, never from a model hub and never with
remote code: `check_model_config` refuses anything else before a weight is read."""

from pathlib import Path
from typing import Any

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


class _Cache(KVCache):
    """A lockstep KV cache for sample generation: transformers' own dynamic cache. The serving
    engine's slotted cache is not supported for these models."""

    def __init__(self, capacity: int) -> None:
        super().__init__(keys=[], values=[])
        self.past: Any = transformers.DynamicCache()
        self._capacity = capacity

    @property
    def capacity(self) -> int:
        return self._capacity


class HuggingFaceLM(CausalLM):
    """A transformers causal LM (or a peft model wrapping one) as a `CausalLM`."""

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
        return _Cache(capacity or self.config.context_length)

    def forward(
        self,
        tokens: Tensor,
        cache: KVCache | None = None,
        *,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        logits_at: Tensor | None = None,
    ) -> Tensor:
        if positions is not None or mask is not None or logits_at is not None:
            raise ModelError(
                "the serving engine's batched decoding does not run Hugging Face models yet; "
                "load the published folder with transformers (docs/finetuning.md)"
            )
        if cache is None:
            out = self.inner(input_ids=tokens, use_cache=False)
            logits: Tensor = out.logits
            return logits
        assert isinstance(cache, _Cache), "a cache from this model's new_cache"
        out = self.inner(input_ids=tokens, past_key_values=cache.past, use_cache=True)
        cache.length += tokens.shape[1]
        logits = out.logits
        return logits

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
