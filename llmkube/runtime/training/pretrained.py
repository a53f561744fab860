"""Fine-tuning a pretrained Hugging Face model with the same loop as llmkube's GPT: the driver
checks the model and the settings before Ray starts (`resolve`), each worker loads the model from
its local copy (`load`), and rank 0 stages a folder transformers and peft load as it is
(`stage`), which the loop publishes."""

import json
import logging
from pathlib import Path
from typing import Any

import peft

from llmkube.api.artifacts import (
    EVAL_FILE,
    MERGED_DIR,
    MODEL_RECORD_FILE,
    BaseModelRecord,
    ModelRecord,
)
from llmkube.api.runconfig import DEFAULT_PRETRAINED_CONTEXT, PretrainedConfig, TrainingRunConfig
from llmkube.runtime.data.errors import DataError
from llmkube.runtime.data.examples import chat_template_problem
from llmkube.runtime.data.prepare_examples import tokenizer_files
from llmkube.runtime.models.base import parameter_counts
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import (
    MODEL_CONFIG_FILE,
    HuggingFaceConfig,
    HuggingFaceLM,
    check_model_config,
    load_pretrained,
    load_tokenizer,
    meta_model,
)
from llmkube.runtime.models.local_copy import local_model_folder
from llmkube.runtime.training.lora import check_lora, with_lora
from llmkube.storage import open_store
from llmkube.storage.models import folder_digest

log = logging.getLogger("llmkube.train")

CARD_FILE = "README.md"


def model_folder(config: TrainingRunConfig) -> Path:
    """This machine's copy of the pretrained model."""
    uri = config.pretrained_source()
    return local_model_folder(open_store(uri, config.storage), uri)


def resolve(config: TrainingRunConfig, folder: Path) -> HuggingFaceConfig:
    """The model's summary with the training context length; a ModelError for an architecture
    llmkube does not fine-tune, a context longer than the model's, or LoRA settings the model
    cannot take; a DataError for chat data and a tokenizer without a chat template. All of it
    before Ray starts."""
    pretrained = config.pretrained
    assert pretrained is not None
    raw = json.loads((folder / MODEL_CONFIG_FILE).read_text())
    summary = check_model_config(raw, pretrained.uri)
    longest = summary.max_context_length
    if pretrained.context_length is not None and pretrained.context_length > longest:
        raise ModelError(
            f"model.overrides.contextLength {pretrained.context_length} is above what "
            f"{pretrained.uri} allows ({longest} positions); choose at most {longest}"
        )
    context = pretrained.context_length or min(DEFAULT_PRETRAINED_CONTEXT, longest)
    if pretrained.method == "lora":
        check_lora(pretrained.lora, meta_model(folder), summary.model_type)
    problem = chat_template_problem(load_tokenizer(folder), config.dataset.format)
    if problem:
        raise DataError(problem)
    return summary.model_copy(update={"context_length": context})


def load(
    pretrained: PretrainedConfig,
    folder: Path,
    summary: HuggingFaceConfig,
    *,
    gradient_checkpointing: bool,
) -> HuggingFaceLM:
    """The pretrained weights, with adapters when the method is lora."""
    model: Any = load_pretrained(folder, summary.model_type, dropout=pretrained.dropout)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if pretrained.method == "lora":
        model = with_lora(model, pretrained.lora, summary.model_type)
    return HuggingFaceLM(model, summary)


def stage(
    out: Path,
    *,
    config: TrainingRunConfig,
    model: HuggingFaceLM,
    folder: Path,
    evaluation: dict[str, Any],
) -> None:
    """Write the model to publish into the local folder `out` as a Hugging Face folder: the
    full model with its tokenizer, or the LoRA adapter (adapter_config.json,
    adapter_model.safetensors) with the tokenizer, and with mergeOnPublish the merged model under
    merged/; with the record of what it is (MODEL_RECORD_FILE, to be uploaded last)."""
    pretrained = config.pretrained
    assert pretrained is not None
    base_uri = config.pretrained_source()
    parameters, trainable = parameter_counts(model)
    tokenizer = {
        name: data for name, data in tokenizer_files(folder).items() if name != MODEL_CONFIG_FILE
    }
    inner: Any = model.hf_model
    merged = None
    for name, data in tokenizer.items():
        (out / name).write_bytes(data)
    if isinstance(inner, peft.PeftModel):
        inner.save_pretrained(str(out))
        adapter = out / "adapter_config.json"
        settings = json.loads(adapter.read_text())
        # The version it was trained on exactly: a job's model/ may point elsewhere later.
        settings["base_model_name_or_path"] = base_uri
        adapter.write_text(json.dumps(settings, indent=2))
        if pretrained.merge_on_publish:
            merged = MERGED_DIR
            for name, data in tokenizer.items():
                (out / merged).mkdir(exist_ok=True)
                (out / merged / name).write_bytes(data)
            inner.merge_and_unload().save_pretrained(out / merged)
    else:
        inner.save_pretrained(out)
    (out / EVAL_FILE).write_text(json.dumps(evaluation, indent=2))
    (out / CARD_FILE).write_text(_card(config, model.config, evaluation, trainable))
    record = ModelRecord(
        format="lora" if pretrained.method == "lora" else "huggingface",
        architecture=model.config.model_type,
        parameters=parameters,
        trainable_parameters=trainable,
        base=BaseModelRecord(
            uri=base_uri,
            digest=folder_digest(open_store(base_uri, config.storage), base_uri),
        ),
        merged=merged,
    )
    (out / MODEL_RECORD_FILE).write_text(record.model_dump_json(indent=2))


def _card(
    config: TrainingRunConfig,
    summary: HuggingFaceConfig,
    evaluation: dict[str, Any],
    trainable: int,
) -> str:
    pretrained = config.pretrained
    assert pretrained is not None
    how = (
        f"LoRA (rank {pretrained.lora.rank}, alpha {pretrained.lora.alpha:g})"
        if pretrained.method == "lora"
        else "full fine-tune"
    )
    load = (
        "peft.PeftModel.from_pretrained(base, this_folder)"
        if pretrained.method == "lora"
        else "AutoModelForCausalLM.from_pretrained(this_folder)"
    )
    return (
        f"# {config.job.name}\n\n"
        f"{how} of {pretrained.uri} ({summary.model_type}, {summary.n_layer} layers, "
        f"hidden size {summary.d_model}), {trainable:,} trainable parameters, "
        f"context {summary.context_length}.\n\n"
        f"Trained for {evaluation['step']} steps on {config.dataset.source} "
        f"({config.dataset.format}).\n\n"
        f"| eval loss | perplexity | accuracy |\n|---|---|---|\n"
        f"| {evaluation['eval_loss']:.4f} | {evaluation['perplexity']:.2f} | "
        f"{evaluation['accuracy']:.3f} |\n\n"
        f"Load it with `{load}`.\n"
    )
