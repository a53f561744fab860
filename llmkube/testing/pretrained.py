"""Tiny pretrained-model folders in Hugging Face format (random weights, ≤ 200k parameters) with
a byte-level BPE tokenizer trained on the Python reference and a ChatML chat template: what the
fine-tuning tests start from instead of a model hub."""

import json
import pydoc_data.topics
import tempfile
from pathlib import Path
from typing import Any

import peft
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from llmkube.api.artifacts import MODEL_RECORD_FILE, BaseModelRecord, ModelRecord
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 512
LAST_WRITTEN = ("config.json", MODEL_RECORD_FILE)


def tiny_tokenizer(*, chat_template: str | None = CHATML) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(pydoc_data.topics.topics.values())[:80], trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=chat_template,
    )


def tiny_config(architecture: str, *, context: int = 256) -> PretrainedConfig:
    shared: dict[str, Any] = {"vocab_size": VOCAB, "bos_token_id": None, "eos_token_id": 2}
    if architecture == "gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=context, **shared)
    family = {"llama": LlamaConfig, "qwen2": Qwen2Config}[architecture]
    config: PretrainedConfig = family(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        **shared,
    )
    return config


def write_tiny_model(
    folder: Path,
    architecture: str = "llama",
    *,
    seed: int = 0,
    context: int = 256,
    chat_template: str | None = CHATML,
) -> Path:
    """A random-init model of `architecture` (llama, qwen2 or gpt2) and its tokenizer."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(architecture, context=context))  # type: ignore[no-untyped-call]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tiny_tokenizer(chat_template=chat_template).save_pretrained(folder)
    return folder


def upload_folder(store: ObjectStore, uri: str, folder: Path) -> str:
    """Every file of `folder` under `uri` (config files last, as llmkube writes them)."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    files.sort(key=lambda path: path.name in LAST_WRITTEN)
    for path in files:
        store.write_bytes(join(uri, path.name), path.read_bytes())
    return uri


def publish_adapter(
    store: ObjectStore,
    uri: str,
    *,
    base_folder: Path,
    base_uri: str,
    base_digest: str,
    architecture: str = "llama",
    seed: int = 0,
    rank: int = 4,
) -> str:
    """A LoRA adapter with random (non-zero) weights, published as a LoRA training job publishes
    one (adapter files, its base's URI in adapter_config.json, the record last). Tests serve
    adapters from several jobs; training each for real would cost minutes and show nothing the
    training tests do not."""
    torch.manual_seed(seed)
    targets = ["c_attn"] if architecture == "gpt2" else ["q_proj", "v_proj"]
    settings = peft.LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False
    )
    base = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True)
    adapted = peft.get_peft_model(base, settings)
    with tempfile.TemporaryDirectory(prefix="llmkube-adapter-") as scratch:
        folder = Path(scratch)
        adapted.save_pretrained(str(folder))
        config = json.loads((folder / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = base_uri
        (folder / "adapter_config.json").write_text(json.dumps(config))
        record = ModelRecord(
            format="lora",
            architecture=architecture,
            parameters=sum(p.numel() for p in adapted.parameters()),
            trainable_parameters=sum(p.numel() for p in adapted.parameters() if p.requires_grad),
            base=BaseModelRecord(uri=base_uri, digest=base_digest),
        )
        (folder / MODEL_RECORD_FILE).write_text(record.model_dump_json())
        return upload_folder(store, uri, folder)
