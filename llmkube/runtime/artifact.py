"""The published model artifact (docs/architecture.md): config.json, model.safetensors,
tokenizer.json, eval.json and card.md under one folder, on any store."""

import json
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from tokenizers import Tokenizer

from llmkube.api.artifacts import EVAL_FILE, GPT_CONFIG_FILE, MODEL_RECORD_FILE, ModelRecord
from llmkube.api.runconfig import GptConfig
from llmkube.runtime.models import CausalLM, ModelConfig, build_model, read_model_config
from llmkube.runtime.models.errors import ModelError
from llmkube.storage import NotFoundError, ObjectStore
from llmkube.storage.uri import join
from llmkube.storage.versions import resolve_model

CONFIG_FILE = GPT_CONFIG_FILE
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CARD_FILE = "card.md"


@dataclass
class LoadedModel:
    model: CausalLM
    config: ModelConfig
    tokenizer: Tokenizer


def weights_bytes(model: CausalLM) -> bytes:
    return save_tensors(model.trainable_state())


def load_weights(model: CausalLM, data: bytes) -> None:
    model.load_trainable_state(load_tensors(data))


def save_artifact(
    store: ObjectStore,
    uri: str,
    *,
    model: CausalLM,
    config: ModelConfig,
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


def check_gpt_artifact(store: ObjectStore, uri: str) -> None:
    """A ModelError for a fine-tuned Hugging Face folder (training continues only from GPT
    artifacts: spec.model.base); a StorageError when there is no artifact at all. `uri` is
    resolved (storage.versions)."""
    record = join(uri, MODEL_RECORD_FILE)
    if store.exists(record):
        kind = ModelRecord.model_validate_json(store.read_bytes(record)).format
        if kind != "gpt":
            raise ModelError(
                f"{uri} is a fine-tuned Hugging Face model ({kind}), not an llmkube GPT "
                "artifact; fine-tune it further with spec.model.pretrained instead of "
                "spec.model.base"
            )
    if not store.exists(join(uri, CONFIG_FILE)):
        raise NotFoundError(
            f"no model artifact at {uri} ({CONFIG_FILE} is missing); point at a published "
            "model/ folder"
        )


def load_artifact(
    store: ObjectStore, uri: str, *, device: torch.device | str = "cpu"
) -> LoadedModel:
    uri = resolve_model(store, uri).uri
    check_gpt_artifact(store, uri)
    config = read_model_config(store.read_bytes(join(uri, CONFIG_FILE)))
    if not isinstance(config, GptConfig):
        raise ModelError(f"{uri} is not an llmkube GPT artifact")
    tokenizer = Tokenizer.from_str(store.read_bytes(join(uri, TOKENIZER_FILE)).decode())
    model = build_model(config)
    load_weights(model, store.read_bytes(join(uri, WEIGHTS_FILE)))
    model.to(device)
    model.eval()
    return LoadedModel(model=model, config=config, tokenizer=tokenizer)
