"""The model interface training, evaluation and serving use. Nothing outside this package names a
model class: `build_model` picks it from the config's architecture."""

from llmkube.api.runconfig import GptConfig
from llmkube.runtime.models.base import CausalLM, KVCache
from llmkube.runtime.models.gpt import GPT


def build_model(config: GptConfig) -> CausalLM:
    """A freshly initialised model for `config`."""
    if config.architecture == "gpt":
        return GPT(config)
    raise ValueError(f"unknown architecture {config.architecture!r}")


__all__ = ["CausalLM", "KVCache", "build_model"]
