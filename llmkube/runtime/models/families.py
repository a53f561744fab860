"""The model families llmkube builds, keyed by the `architecture` their config names (and so the
config.json of a published model or checkpointed run). Training, evaluation, serving and artifact
loading find a model only through here: a new family is one more entry, and the training loop,
the serving engine and the operator's builders do not change."""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmkube.api.runconfig import GptConfig
from llmkube.runtime.models.base import CausalLM
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.gpt import GPT
from llmkube.runtime.models.huggingface_config import HuggingFaceConfig

ModelConfig = GptConfig | HuggingFaceConfig
"""Every family's config. A pretrained Hugging Face model is loaded with its weights
(training/pretrained.py), never built from its summary here."""


@dataclass(frozen=True)
class ModelFamily:
    architecture: str
    config_type: type[GptConfig]
    build: Callable[[GptConfig], CausalLM]


FAMILIES = {family.architecture: family for family in (ModelFamily("gpt", GptConfig, GPT),)}


def family(architecture: str) -> ModelFamily:
    found = FAMILIES.get(architecture)
    if found is None:
        raise ValueError(
            f"unknown model architecture {architecture!r}; llmkube builds "
            + ", ".join(sorted(FAMILIES))
        )
    return found


def model_config(raw: Mapping[str, Any]) -> ModelConfig:
    """A model config as stored (config.json, or a run's wire form), read as its family's."""
    if raw.get("architecture") == "huggingface":
        return HuggingFaceConfig.model_validate(raw)
    if "model_type" in raw:
        raise ModelError(
            f"this is a Hugging Face {raw['model_type']} model folder, not an llmkube GPT "
            "artifact; load it with transformers (docs/finetuning.md)"
        )
    return family(str(raw.get("architecture"))).config_type.model_validate(raw)


def read_model_config(data: bytes) -> ModelConfig:
    """A config.json's bytes, read as its family's config."""
    loaded: dict[str, Any] = json.loads(data)
    return model_config(loaded)


def build_model(config: GptConfig) -> CausalLM:
    """A freshly initialised model for `config`."""
    return family(config.architecture).build(config)
