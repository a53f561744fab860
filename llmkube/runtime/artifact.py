"""The published model artifact (docs/architecture.md): config.json, model.safetensors,
tokenizer.json, eval.json and card.md under one folder, on any store."""

import json
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from tokenizers import Tokenizer
from torch import nn

from llmkube.api.runconfig import GptConfig
from llmkube.runtime.models import CausalLM, build_model
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
EVAL_FILE = "eval.json"
CARD_FILE = "card.md"
# The output projection shares the token embedding's tensor; it is stored once.
TIED = {"lm_head.weight": "token_embedding.weight"}


@dataclass
class LoadedModel:
    model: CausalLM
    config: GptConfig
    tokenizer: Tokenizer


def weights_bytes(model: nn.Module) -> bytes:
    state = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if name not in TIED
    }
    return save_tensors(state)


def load_weights(model: nn.Module, data: bytes) -> None:
    state = load_tensors(data)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if set(missing) - set(TIED) or unexpected:
        raise ValueError(
            f"weights do not match the model config: missing {sorted(set(missing) - set(TIED))}, "
            f"unexpected {sorted(unexpected)}"
        )


def save_artifact(
    store: ObjectStore,
    uri: str,
    *,
    model: nn.Module,
    config: GptConfig,
    tokenizer: Tokenizer,
    evaluation: dict[str, Any],
    card: str,
) -> None:
    """Write the artifact; config.json goes last, so a reader that finds it finds the rest."""
    store.write_bytes(join(uri, WEIGHTS_FILE), weights_bytes(model))
    store.write_bytes(join(uri, TOKENIZER_FILE), tokenizer.to_str().encode())
    store.write_bytes(join(uri, EVAL_FILE), json.dumps(evaluation, indent=2).encode())
    store.write_bytes(join(uri, CARD_FILE), card.encode())
    store.write_bytes(
        join(uri, CONFIG_FILE), config.model_dump_json(by_alias=True, indent=2).encode()
    )


def load_artifact(
    store: ObjectStore, uri: str, *, device: torch.device | str = "cpu"
) -> LoadedModel:
    config = GptConfig.model_validate_json(store.read_bytes(join(uri, CONFIG_FILE)))
    tokenizer = Tokenizer.from_str(store.read_bytes(join(uri, TOKENIZER_FILE)).decode())
    model = build_model(config)
    load_weights(model, store.read_bytes(join(uri, WEIGHTS_FILE)))
    model.to(device)
    model.eval()
    return LoadedModel(model=model, config=config, tokenizer=tokenizer)
