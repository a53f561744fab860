"""What a replica serves, loaded from its run config: the model behind the engine, how prompts
become tokens, and the model ids the API answers to.

- llmkube's GPT artifact: one id, the deployment's name.
- A Hugging Face model (imported, or a full fine-tune): one id, the deployment's name.
- A LoRA adapter (a LoRA job's model/ folder): its base is loaded from the URI the adapter
  records, and the adapter on it under the deployment's name; the base alone answers as
  `<name>-base`.
Adapters from `spec.model.adapters` come on top (adapters.py), each under its own name.
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from llmkube.api.deployment import base_model_id
from llmkube.api.runconfig import ServeRunConfig, StorageConfig
from llmkube.runtime.artifact import load_artifact
from llmkube.runtime.models import CausalLM
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import (
    MODEL_CONFIG_FILE,
    HuggingFaceLM,
    check_model_config,
    load_pretrained,
    load_tokenizer,
)
from llmkube.runtime.models.local_copy import local_model_folder
from llmkube.runtime.prompts import PlainPrompts, PretrainedPrompts, PromptCodec
from llmkube.runtime.tokenizer import END_OF_TEXT
from llmkube.storage import open_store
from llmkube.storage.models import (
    ADAPTER_CONFIG_FILE,
    ModelFolder,
    adapter_problem,
    folder_digest,
    inspect_model,
)

log = logging.getLogger("llmkube.serve")

DEFAULT_MAX_PROMPT_TOKENS = 2048
"""The prompt limit when serving.maxPromptTokens is unset: the model's context, at most this
(each slot of the KV cache holds the longest prompt plus maxTokens)."""
GENERATION_CONFIG_FILE = "generation_config.json"


@dataclass
class ServedModel:
    model: CausalLM
    codec: PromptCodec
    tokenizer: Tokenizer
    """The engine's view of the vocabulary (token bytes)."""
    ids: dict[str, str | None]
    """API model id → the adapter it generates with (None: the model itself). Replaced whole
    on every change, so a reader holding it sees one consistent set."""
    base: ModelFolder | None = None
    """The Hugging Face model adapters go on (None: llmkube's GPT, which takes none)."""
    base_digest: str = ""
    adapters_loaded: dict[str, str] = field(default_factory=dict)
    """Adapter name → the folder it was loaded from."""

    @property
    def base_id(self) -> str:
        """The id of requests without an adapter."""
        return next(name for name, adapter in self.ids.items() if adapter is None)


def serving_limits(run: ServeRunConfig, model_context: int) -> tuple[int, int]:
    """(longest prompt, tokens per KV-cache slot) for this model and serving spec."""
    serving = run.serving
    prompt = min(serving.max_prompt_tokens or DEFAULT_MAX_PROMPT_TOKENS, model_context)
    return prompt, min(model_context, prompt + serving.max_tokens)


def _stop_ids(folder: Path) -> frozenset[int]:
    """End-of-turn ids from generation_config.json (eos_token_id: one id or a list)."""
    from transformers import GenerationConfig

    if not (folder / GENERATION_CONFIG_FILE).exists():
        return frozenset()
    eos: Any = GenerationConfig.from_pretrained(folder, local_files_only=True).eos_token_id
    if eos is None:
        return frozenset()
    return frozenset([eos] if isinstance(eos, int) else [int(i) for i in eos])


def _local(storage: StorageConfig, uri: str, *, what: str, required: str) -> Path:
    return local_model_folder(open_store(uri, storage), uri, what=what, required=required)


def _huggingface(folder: Path, device: str) -> tuple[HuggingFaceLM, PretrainedPrompts]:
    raw = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    summary = check_model_config(raw, str(folder))
    if raw.get("use_sliding_window"):
        # The engine's mask lets every layer see the whole slot; a sliding window would differ.
        raise ModelError(
            f"{folder} uses sliding-window attention (use_sliding_window: true), which llmkube's "
            "serving engine does not apply; serve a model without it"
        )
    model = HuggingFaceLM(load_pretrained(folder, summary.model_type), summary)
    model.to(device)
    model.eval()
    tokenizer = load_tokenizer(folder)
    return model, PretrainedPrompts(tokenizer, chat=False, stop_ids=_stop_ids(folder))


def load_served_model(run: ServeRunConfig, device: str) -> ServedModel:
    return load_model(
        run.model_uri,
        run.storage,
        device,
        name=run.deployment.name,
        max_lora_rank=run.serving.max_lora_rank,
    )


def load_model(
    uri: str, storage: StorageConfig, device: str, *, name: str, max_lora_rank: int
) -> ServedModel:
    """The model at `uri` (any format llmkube publishes or imports), ready to generate; `name`
    is its model id. A job's model/ is read as the version it points at when loading starts."""
    store = open_store(uri, storage)
    found = inspect_model(store, uri)
    if found.format == "gpt":
        loaded = load_artifact(store, found.uri, device=device)
        end_of_text = loaded.tokenizer.token_to_id(END_OF_TEXT)
        codec = PlainPrompts(
            loaded.tokenizer,
            stop_ids=frozenset([end_of_text] if end_of_text is not None else []),
        )
        return ServedModel(loaded.model, codec, loaded.tokenizer, {name: None})
    base = found
    if found.format == "lora":
        assert found.base_uri is not None
        base = inspect_model(open_store(found.base_uri, storage), found.base_uri)
        if base.format != "huggingface":
            raise ModelError(
                f"the adapter at {found.uri} was trained on {found.base_uri}, which is a "
                f"{base.format} model, not a Hugging Face one"
            )
    folder = _local(storage, base.uri, what="the served model", required=MODEL_CONFIG_FILE)
    model, prompts = _huggingface(folder, device)
    served = ServedModel(
        model,
        prompts,
        prompts.tokenizer.backend_tokenizer,
        {name: None},
        base=base,
        base_digest=folder_digest(open_store(base.uri, storage), base.uri),
    )
    if found.format == "lora":
        problem = adapter_problem(
            found,
            base_uri=base.uri,
            base_digest=served.base_digest,
            max_rank=max_lora_rank,
        )
        if problem is not None:
            raise ModelError(problem)
        adapter = _local(storage, found.uri, what="model.uri", required=ADAPTER_CONFIG_FILE)
        model.add_adapter(name, adapter)
        model.eval()
        served.ids = {name: name, base_model_id(name): None}
        served.adapters_loaded[name] = found.uri
        log.info("serving the adapter %s on %s", found.uri, base.uri)
    return served
