"""Contract tests: Hugging Face models (tiny, random) in the serving engine's slotted KV cache
give what plain `transformers` and `peft` give, for every allowlisted architecture."""

import asyncio
import json
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from tokenizers import Tokenizer, decoders, models

from llmkube.api.runconfig import StorageConfig
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import (
    HuggingFaceLM,
    check_model_config,
    load_pretrained,
    load_tokenizer,
)
from llmkube.runtime.prompts import PretrainedPrompts
from llmkube.runtime.sampling import generate
from llmkube.runtime.serving.engine import (
    Engine,
    GenerationRequest,
    decode_inputs,
    prefill_inputs,
)
from llmkube.runtime.serving.served_model import load_model
from llmkube.runtime.tokenizer import token_bytes
from llmkube.testing.pretrained import VOCAB, write_tiny_model

ARCHITECTURES = ("llama", "qwen2", "gpt2")
PROMPTS = [[5, 17, 33], [9, 8, 7, 6, 5, 4, 3, 2, 1, 60, 61], [100, 200, 300, 400, 12, 13]]
DECODE_STEPS = 4
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {name: write_tiny_model(root / name, name) for name in ARCHITECTURES}


def _wrap(folder: Path, architecture: str, model: Any) -> HuggingFaceLM:
    summary = check_model_config(json.loads((folder / "config.json").read_text()), architecture)
    return HuggingFaceLM(model, summary).eval()


def _adapter(folder: Path, architecture: str, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) weights on the attention projections."""
    torch.manual_seed(seed)
    targets = ["c_attn"] if architecture == "gpt2" else ["q_proj", "v_proj"]
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    model = peft.get_peft_model(load_pretrained(folder, architecture), config)
    model.save_pretrained(str(out))
    return out


def _slotted_logits(
    model: HuggingFaceLM,
    prompts: list[list[int]],
    continuations: list[list[int]],
    adapters: list[str | None] | None = None,
) -> list[torch.Tensor]:
    """Per step, the logits [rows, vocab] the engine's calls give: one prefill into slots 1..n
    of a cache (slot 0 left to another request), then decode steps feeding `continuations`."""
    cache = model.new_cache(len(prompts) + 1, 64)
    extra: dict[str, Any] = {"adapters": adapters} if adapters else {}
    steps = []
    with torch.no_grad():
        cache.first_row = 1
        inputs = prefill_inputs(prompts, torch.device("cpu"))
        steps.append(model(**inputs, cache=cache, **extra)[:, -1])
        # The decode steps run over slots 0..n: move the rows down as the engine does.
        for store in (cache.keys, cache.values):
            for layer in store:
                layer[: len(prompts)] = layer[1 : len(prompts) + 1].clone()
        cache.first_row = 0
        lengths = [len(prompt) for prompt in prompts]
        for step in range(DECODE_STEPS):
            last = [continuation[step] for continuation in continuations]
            inputs = decode_inputs(last, lengths, torch.device("cpu"))
            steps.append(model(**inputs, cache=cache, **extra)[:, -1])
            lengths = [length + 1 for length in lengths]
    return steps


def _plain_logits(model: Any, prompt: list[int], continuation: list[int]) -> list[torch.Tensor]:
    """The same logits from whole-sequence forwards of the transformers model alone."""
    sequence = prompt + continuation[:DECODE_STEPS]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([sequence])).logits[0]
    return [logits[len(prompt) - 1 + step] for step in range(DECODE_STEPS + 1)]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_slotted_prefill_and_decode_equal_plain_transformers(
    folders: dict[str, Path], architecture: str
) -> None:
    folder = folders[architecture]
    model = _wrap(folder, architecture, load_pretrained(folder, architecture))
    continuations = [[(11 * row + 3 * step) % VOCAB for step in range(8)] for row in range(3)]
    slotted = _slotted_logits(model, PROMPTS, continuations)
    for row, (prompt, continuation) in enumerate(zip(PROMPTS, continuations, strict=True)):
        plain = _plain_logits(model.inner, prompt, continuation)
        for step, expected in enumerate(plain):
            difference = (slotted[step][row] - expected).abs().max().item()
            assert difference < TOLERANCE, (row, step, difference)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_row_of_a_mixed_adapter_batch_equals_peft_alone(
    folders: dict[str, Path], architecture: str, tmp_path: Path
) -> None:
    folder = folders[architecture]
    first = _adapter(folder, architecture, tmp_path / "first", seed=1)
    second = _adapter(folder, architecture, tmp_path / "second", seed=2)
    served = peft.PeftModel.from_pretrained(
        load_pretrained(folder, architecture), first, adapter_name="first"
    )
    served.load_adapter(str(second), adapter_name="second")
    model = _wrap(folder, architecture, served)
    adapters: list[str | None] = ["first", None, "second"]
    continuations = [[(7 * row + step) % VOCAB for step in range(8)] for row in range(3)]
    slotted = _slotted_logits(model, PROMPTS, continuations, adapters)
    references: dict[str | None, Any] = {
        "first": peft.PeftModel.from_pretrained(load_pretrained(folder, architecture), first),
        None: load_pretrained(folder, architecture),
        "second": peft.PeftModel.from_pretrained(load_pretrained(folder, architecture), second),
    }
    for row, name in enumerate(adapters):
        reference = references[name].eval()
        plain = _plain_logits(reference, PROMPTS[row], continuations[row])
        for step, expected in enumerate(plain):
            difference = (slotted[step][row] - expected).abs().max().item()
            assert difference < TOLERANCE, (name, step, difference)
    # The adapters change the logits: the test would notice if one were ignored.
    base = _plain_logits(references[None], PROMPTS[0], continuations[0])
    assert (slotted[0][0] - base[0]).abs().max().item() > 1e-2
    # A batch in which no row names an adapter is the base model's, whatever peft holds active.
    alone = _slotted_logits(model, PROMPTS[:1], continuations[:1])
    assert (alone[0][0] - base[0]).abs().max().item() < TOLERANCE


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_batched_greedy_answers_equal_each_request_alone(
    folders: dict[str, Path], architecture: str
) -> None:
    folder = folders[architecture]
    inner: Any = load_pretrained(folder, architecture)
    with torch.no_grad():  # peaky logits: no near-ties for rounding to flip
        inner.get_input_embeddings().weight.mul_(30)
    model = _wrap(folder, architecture, inner)
    tokenizer = load_tokenizer(folder).backend_tokenizer
    lengths = [9, 4, 12, 7]
    prompts = [*PROMPTS, [42]]
    alone = [generate(model, p, n) for p, n in zip(prompts, lengths, strict=True)]
    engine = Engine(model, tokenizer, max_batch_size=3, max_concurrent_requests=8)

    async def together() -> list[list[int]]:
        async def one(prompt: list[int], limit: int) -> list[int]:
            request = GenerationRequest(prompt=prompt, max_tokens=limit)
            return [t async for event in engine.generate(request) for t in event.tokens]

        return await asyncio.gather(*(one(p, n) for p, n in zip(prompts, lengths, strict=True)))

    try:
        assert asyncio.run(together()) == alone
    finally:
        engine.close()


def test_chats_use_the_models_template_or_plain_text_without_one(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    templated = PretrainedPrompts(load_tokenizer(folders["llama"]), chat=False)
    turns = [("developer", "Be brief."), ("user", "What is a list?")]
    text = templated.tokenizer.decode(templated.encode_chat(turns))
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is a list?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert templated.stop_ids == {templated.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert templated.chat_stops == ()
    bare = write_tiny_model(tmp_path / "bare", "gpt2", chat_template=None)
    plain = PretrainedPrompts(load_tokenizer(bare), chat=False, stop_ids=frozenset({7}))
    assert plain.tokenizer.decode(plain.encode_chat(turns)) == (
        "Be brief.\n\nUser: What is a list?\nAssistant:"
    )
    assert plain.chat_stops == ("\nUser:",)
    assert 7 in plain.stop_ids


def test_sentencepiece_vocabularies_map_to_their_bytes() -> None:
    vocab = {"<unk>": 0, "<0x0A>": 1, "<0xC3>": 2, "<0xA9>": 3, "\u2581the": 4, "re": 5}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tokenizer.add_special_tokens(["<unk>"])
    table = token_bytes(tokenizer)
    assert table == [b"", b"\n", b"\xc3", b"\xa9", b" the", b"re"]
    assert (table[2] + table[3]).decode() == "é"


def test_sliding_window_models_are_refused_for_serving(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path / "qwen2", "qwen2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "use_sliding_window": True}))
    with pytest.raises(ModelError, match="sliding-window attention"):
        load_model(f"file://{folder}", StorageConfig(), "cpu", name="m", max_lora_rank=8)
