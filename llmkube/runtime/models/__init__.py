"""The model interface training, evaluation and serving use. Nothing outside this package names a
model class: `build_model` picks it from the config's architecture (families.py)."""

from llmkube.runtime.models.base import CausalLM, KVCache
from llmkube.runtime.models.families import (
    ModelConfig,
    build_model,
    model_config,
    read_model_config,
)

__all__ = ["CausalLM", "KVCache", "ModelConfig", "build_model", "model_config", "read_model_config"]
