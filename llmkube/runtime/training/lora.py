"""LoRA with peft: which layers take adapters, checked against the model before training starts,
and the model wrapped so that only the adapters train."""

from typing import Any

import peft
from torch import nn
from transformers.pytorch_utils import Conv1D

from llmkube.api.training import LoraSpec
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import DEFAULT_LORA_TARGETS


def linear_layer_names(model: nn.Module) -> dict[str, int]:
    """Last part of each linear layer's name → its smallest width (the most a LoRA rank can
    use). GPT-2's Conv1D is a linear layer with its weight transposed."""
    widths: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | Conv1D) and name:
            short = name.rsplit(".", 1)[-1]
            width = min(module.weight.shape)
            widths[short] = min(width, widths.get(short, width))
    return widths


def lora_targets(spec: LoraSpec, model_type: str) -> list[str]:
    return spec.target_modules or DEFAULT_LORA_TARGETS[model_type]


def check_lora(spec: LoraSpec, model: nn.Module, model_type: str) -> list[str]:
    """The target module names, or a ModelError naming what the model has instead."""
    layers = linear_layer_names(model)
    targets = lora_targets(spec, model_type)
    unknown = [name for name in targets if name not in layers]
    if unknown:
        raise ModelError(
            f"finetune.lora.targetModules {unknown} are not linear layers of this {model_type} "
            f"model; it has {sorted(layers)}"
        )
    narrowest = min(layers[name] for name in targets)
    if spec.rank > narrowest:
        raise ModelError(
            f"finetune.lora.rank {spec.rank} is larger than the narrowest adapted layer "
            f"({narrowest}); choose a rank of at most {narrowest}"
        )
    return targets


def lora_config(spec: LoraSpec, targets: list[str]) -> peft.LoraConfig:
    alpha: Any = spec.resolved_alpha()
    return peft.LoraConfig(
        r=spec.rank,
        lora_alpha=alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        task_type=peft.TaskType.CAUSAL_LM,
        bias="none",
    )


def with_lora(model: nn.Module, spec: LoraSpec, model_type: str) -> peft.PeftModel:
    """`model` with adapters on the target layers; every other weight frozen."""
    targets = check_lora(spec, model, model_type)
    wrapped: peft.PeftModel = peft.get_peft_model(model, lora_config(spec, targets))
    return wrapped
