"""What llmkube knows of a pretrained Hugging Face model without loading it: the allowlisted
architectures, their LoRA defaults, and the summary of a config.json the training loop uses."""

from typing import Any, Literal

from pydantic import BaseModel

from llmkube.runtime.models.errors import ModelError

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "gpt2": "GPT2LMHeadModel",
}
"""model_type in config.json → the transformers class that loads it: what llmkube fine-tunes."""

DEFAULT_LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt2": ["c_attn"],
}
"""The attention projections of each architecture: LoRA's default targets."""

MODEL_CONFIG_FILE = "config.json"


class HuggingFaceConfig(BaseModel):
    """What the training loop needs to know of a pretrained model (its config.json stays the
    model's own)."""

    architecture: Literal["huggingface"] = "huggingface"
    model_type: str
    n_layer: int
    d_model: int
    context_length: int
    """The training sequence length (at most the model's own)."""
    max_context_length: int
    """The longest sequence the model's position encoding allows."""
    vocab_size: int


def check_model_config(raw: dict[str, Any], source: str) -> HuggingFaceConfig:
    """The summary of an allowlisted model's config.json; a ModelError naming what was found
    otherwise."""
    model_type = raw.get("model_type")
    classes = raw.get("architectures") or []
    if "auto_map" in raw:
        raise ModelError(
            f"{source} needs remote code (its config.json has auto_map {sorted(raw['auto_map'])}),"
            " which llmkube never runs; use a model of a built-in architecture: "
            + ", ".join(sorted(ARCHITECTURES))
        )
    if "quantization_config" in raw:
        method = raw["quantization_config"].get("quant_method", "?")
        raise ModelError(
            f"{source} is quantized ({method}); llmkube fine-tunes full-precision weights: "
            "`llmkube models import` dequantizes GGUF files"
        )
    if model_type not in ARCHITECTURES:
        found = f"model_type {model_type!r}" + (f" ({', '.join(classes)})" if classes else "")
        raise ModelError(
            f"{source} is a {found}; llmkube fine-tunes "
            + ", ".join(f"{name} ({cls})" for name, cls in sorted(ARCHITECTURES.items()))
        )
    if classes and ARCHITECTURES[model_type] not in classes:
        raise ModelError(
            f"{source} declares architectures {classes}; for model_type {model_type} llmkube "
            f"loads {ARCHITECTURES[model_type]} (a causal language model)"
        )
    from transformers import AutoConfig  # heavy; only where a pretrained model is checked

    config = AutoConfig.for_model(**raw)
    max_context = int(
        getattr(config, "max_position_embeddings", None)
        or getattr(config, "n_positions", None)
        or 0
    )
    return HuggingFaceConfig(
        model_type=model_type,
        n_layer=int(config.num_hidden_layers),
        d_model=int(config.hidden_size),
        context_length=max_context,
        max_context_length=max_context,
        vocab_size=int(config.vocab_size),
    )


DROPOUT_FIELDS = {
    "llama": ("attention_dropout",),
    "qwen2": ("attention_dropout",),
    "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
}
"""The config fields a dropout override sets, per architecture."""
