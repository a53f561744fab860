"""Fine-tuning pretrained models, piece by piece, on tiny random-init Llama, Qwen2 and GPT-2
folders: records, chat rendering and loss masks, layout, the allowlist, LoRA wiring and adapter
round trips, and the contract with the pinned transformers and peft."""

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import peft
import pytest
import torch
from pydantic import ValidationError

from llmkube.api import LLMTrainingJob
from llmkube.api.artifacts import MODEL_RECORD_FILE, ModelRecord
from llmkube.api.training import LoraSpec
from llmkube.runtime.artifact import check_gpt_artifact
from llmkube.runtime.data.examples import IGNORED, Rendered, lay_out, parse_records, render
from llmkube.runtime.data.shards import Sequences
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import (
    HuggingFaceLM,
    check_model_config,
    load_pretrained,
    load_tokenizer,
    meta_model,
)
from llmkube.runtime.sampling import generate
from llmkube.runtime.training.lora import check_lora, with_lora
from llmkube.storage import StorageError, open_store
from llmkube.testing.pretrained import write_tiny_model
from tests.commands import llmkube

ARCHITECTURES = ("llama", "qwen2", "gpt2")
CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a list?"},
        {"role": "assistant", "content": "A mutable sequence."},
        {"role": "user", "content": "And a tuple?"},
        {"role": "assistant", "content": "An immutable one."},
    ]
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: write_tiny_model(root / name, name) for name in ARCHITECTURES}


def test_pinned_versions_are_the_ones_installed() -> None:
    # The loop relies on internals (peft's adapter files, transformers' chat templates and
    # caches) that change between minor versions: pyproject pins them, and this holds it.
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    for package in ("transformers", "peft", "gguf"):
        assert f'"{package}=={version(package)}"' in pyproject


def test_bad_records_are_named_by_line_and_counted() -> None:
    lines = [
        json.dumps(CHAT),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
        "",
        json.dumps({"messages": [{"role": "user", "content": 3}]}),
    ]
    parsed = parse_records("\n".join(lines).encode(), "chat", "a.jsonl")
    assert len(parsed.documents) == 1
    assert parsed.invalid == 4
    assert parsed.problems[0].startswith("a.jsonl line 2: not valid JSON")
    assert "line 3: has no assistant message" in parsed.problems[1]
    assert "line 4: messages[0].role is 'robot'" in parsed.problems[2]
    assert "line 6: messages[0].content must be a string" in parsed.problems[3]
    instructions = parse_records(
        b'{"prompt": "a"}\n{"prompt": "a", "completion": "b"}', "instruction", "i"
    )
    assert (len(instructions.documents), instructions.problems) == (
        1,
        ['i line 1: needs a string "completion"'],
    )


def _text_of(tokenizer: Any, rendered: Rendered) -> str:
    return str(
        tokenizer.decode([i for i, loss in zip(rendered.ids, rendered.loss, strict=True) if loss])
    )


def test_chat_loss_covers_the_answers_and_their_end_of_turn_only(tiny: dict[str, Path]) -> None:
    tokenizer = load_tokenizer(tiny["llama"])
    rendered = render(tokenizer, json.dumps(CHAT), "chat", train_on_prompt=False)
    assert (
        _text_of(tokenizer, rendered)
        == "A mutable sequence.<|im_end|>\nAn immutable one.<|im_end|>\n"
    )
    assert tokenizer.decode(rendered.ids) == tokenizer.apply_chat_template(
        CHAT["messages"], tokenize=False
    )
    everything = render(tokenizer, json.dumps(CHAT), "chat", train_on_prompt=True)
    assert all(everything.loss)


def test_instruction_loss_covers_the_completion_and_eos(tiny: dict[str, Path]) -> None:
    tokenizer = load_tokenizer(tiny["gpt2"])
    document = json.dumps({"prompt": "Q: 2+2?\nA:", "completion": " 4"})
    rendered = render(tokenizer, document, "instruction", train_on_prompt=False)
    assert rendered.ids[-1] == tokenizer.eos_token_id
    assert _text_of(tokenizer, rendered) == " 4<|im_end|>"


def test_rows_are_padded_cut_or_dropped_and_packing_joins_them() -> None:
    examples = [
        Rendered(ids=[1, 2, 3], loss=[False, True, True]),
        Rendered(ids=list(range(10, 20)), loss=[False] * 4 + [True] * 6),
        Rendered(ids=[5, 6, 7, 8, 9, 10, 11], loss=[False] * 6 + [True]),  # answer past the row
    ]
    rows = lay_out(examples, context_length=4, packing=False, pad_id=0, dtype="uint16")
    assert (rows.row_tokens, rows.truncated, rows.dropped) == (5, 2, 1)
    assert rows.tokens.tolist() == [1, 2, 3, 0, 0, 10, 11, 12, 13, 14]
    assert rows.loss.tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    packed = lay_out(examples, context_length=4, packing=True, pad_id=0, dtype="uint16")
    assert packed.row_tokens is None
    assert len(packed.tokens) == 20


def test_sequences_ignore_targets_without_loss_and_trim_padding() -> None:
    tokens = np.array([1, 2, 3, 0, 0, 10, 11, 12, 13, 14], dtype=np.uint16)
    loss = np.array([0, 1, 1, 0, 0, 0, 0, 1, 0, 0], dtype=np.uint8)
    rows = Sequences([tokens], context_length=4, losses=[loss], rows=True)
    assert len(rows) == 2
    inputs, targets = rows.batch([0, 1])
    # The last target that counts is the second of both rows: the padding after it is cut.
    assert inputs.tolist() == [[1, 2], [10, 11]]
    assert targets.tolist() == [[2, 3], [IGNORED, 12]]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"model_type": "bert", "architectures": ["BertModel"]}, "model_type 'bert' (BertModel)"),
        ({"model_type": "llama", "auto_map": {"AutoModel": "x.Y"}}, "needs remote code"),
        ({"model_type": "llama", "architectures": ["LlamaModel"]}, "loads LlamaForCausalLM"),
        (
            {"model_type": "llama", "quantization_config": {"quant_method": "gguf"}},
            "is quantized (gguf)",
        ),
    ],
)
def test_architectures_outside_the_allowlist_are_refused_by_name(
    raw: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_model_config(raw, "s3://models/x")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_allowlisted_configs_report_their_shape(tiny: dict[str, Path], architecture: str) -> None:
    raw = json.loads((tiny[architecture] / "config.json").read_text())
    summary = check_model_config(raw, architecture)
    assert (summary.model_type, summary.n_layer, summary.d_model) == (architecture, 2, 64)
    assert summary.max_context_length == 256


def test_lora_settings_the_model_cannot_take_are_refused(tiny: dict[str, Path]) -> None:
    model = meta_model(tiny["llama"])
    with pytest.raises(ModelError, match=r"\['qkv'\] are not linear layers .* has \[.*'q_proj'"):
        check_lora(LoraSpec(target_modules=["qkv"]), model, "llama")
    with pytest.raises(
        ModelError, match="rank 64 is larger than the narrowest adapted layer \\(32\\)"
    ):
        check_lora(LoraSpec(rank=64), model, "llama")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_adapters_train_alone_and_reload_to_the_same_logits(
    tiny: dict[str, Path], architecture: str, tmp_path: Path
) -> None:
    base = load_pretrained(tiny[architecture], architecture)
    frozen = {name: p.detach().clone() for name, p in base.named_parameters()}
    model = HuggingFaceLM(
        with_lora(base, LoraSpec(rank=4), architecture),
        check_model_config(
            json.loads((tiny[architecture] / "config.json").read_text()), architecture
        ),
    )
    trainable = model.trainable_state()
    assert trainable
    assert all("lora_" in name for name in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    tokens = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        logits = model(tokens)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        expected = model(tokens)
    adapter = tmp_path / "adapter"
    model.hf_model.save_pretrained(str(adapter))  # type: ignore[operator]
    assert sorted(p.name for p in adapter.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    reloaded = peft.PeftModel.from_pretrained(
        load_pretrained(tiny[architecture], architecture), adapter
    )
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=tokens).logits, expected, atol=1e-5)
    # Only the adapters moved: the pretrained weights are as loaded.
    merged = reloaded.merge_and_unload()
    changed = [
        name
        for name, p in base.named_parameters()
        if "lora_" not in name and name in frozen and not torch.equal(p, frozen[name])
    ]
    assert not changed
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=tokens).logits, expected, atol=1e-4)


def _job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": "ft"},
        "spec": {
            "model": {"pretrained": {"uri": "s3://models/smollm2/"}},
            "dataset": {"source": "s3://data/chat/", "format": "chat"},
            "training": {"maxSteps": 10},
            "output": "s3://out/ft/",
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model": {"preset": "tiny", "pretrained": {"uri": "s3://models/x"}}},
            "model.preset and model.pretrained exclude",
        ),
        ({"tokenizer": {"type": "byte"}}, "tokenizer does not apply to model.pretrained"),
        ({"model": {"preset": "tiny"}}, "dataset.format chat needs model.pretrained"),
        (
            {"model": {"preset": "tiny"}, "dataset": {"source": "s3://data/text/"}, "finetune": {}},
            "finetune applies only",
        ),
        (
            {"model": {"pretrained": {"uri": "s3://models/x"}, "overrides": {"nLayer": 2}}},
            "overrides.nLayer, nHead and dModel cannot change the shape of model.base",
        ),
    ],
)
def test_fine_tune_specs_that_cannot_work_are_refused(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        LLMTrainingJob.model_validate(_job(**changes))


def test_fine_tune_defaults_resolve_in_the_run_config() -> None:
    from llmkube.api.runconfig import training_run_config

    config = training_run_config(LLMTrainingJob.model_validate(_job()))
    assert config.model is None
    assert config.pretrained is not None
    assert (
        config.pretrained.method,
        config.pretrained.lora.rank,
        config.pretrained.lora.alpha,
    ) == ("lora", 8, 16.0)
    assert config.context_length == 1024


def test_continuing_training_refuses_a_fine_tuned_folder_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / MODEL_RECORD_FILE).write_text(
        ModelRecord(
            format="lora", architecture="llama", parameters=10, trainable_parameters=1
        ).model_dump_json()
    )
    with pytest.raises(ModelError, match=r"model \(lora\), .* instead of spec.model.base"):
        check_gpt_artifact(open_store("file://"), f"file://{folder}")
    with pytest.raises(StorageError, match="no model artifact at"):
        check_gpt_artifact(open_store("file://"), f"file://{tmp_path}/nothing")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_cached_generation_matches_recomputing_the_whole_sequence(
    tiny: dict[str, Path], architecture: str
) -> None:
    # Evaluation samples decode through transformers' own cache behind CausalLM.new_cache.
    summary = check_model_config(
        json.loads((tiny[architecture] / "config.json").read_text()), architecture
    )
    model = HuggingFaceLM(load_pretrained(tiny[architecture], architecture), summary).eval()
    prompt = [5, 17, 33, 101, 7]
    produced = generate(model, prompt, 6, stop_ids=frozenset())
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            sequence.append(int(model(torch.tensor([sequence]))[0, -1].argmax()))
    assert produced == sequence[len(prompt) :]
    stop = produced[2]
    assert (
        generate(model, prompt, 6, stop_ids=frozenset({stop})) == produced[: produced.index(stop)]
    )


def test_models_import_and_list_a_folder_and_refuse_other_architectures(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    destination = f"file://{tmp_path}/store/models/tiny-qwen2"
    imported = llmkube("models", "import", str(tiny["qwen2"]), destination)
    assert imported.returncode == 0, imported.stderr
    assert f"imported qwen2 to {destination} (6 files" in imported.stdout
    copied = tmp_path / "store" / "models" / "tiny-qwen2"
    assert (copied / "model.safetensors").read_bytes() == (
        tiny["qwen2"] / "model.safetensors"
    ).read_bytes()
    listed = llmkube("models", "list", f"file://{tmp_path}/store/")
    assert listed.returncode == 0, listed.stderr
    assert "tiny-qwen2" in listed.stdout
    assert "pretrained" in listed.stdout

    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    refused = llmkube("models", "import", str(bert), f"file://{tmp_path}/store/bert")
    assert refused.returncode == 2
    assert "model_type 'bert'; llmkube fine-tunes" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "store" / "bert").exists()
