"""The GPT, its KV cache, sampling, the artifact round trip and the optimizer setup."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from llmkube.api.artifacts import complete_checkpoints_among
from llmkube.api.runconfig import GptConfig
from llmkube.api.training import TrainingSpec
from llmkube.runtime.artifact import load_artifact, save_artifact
from llmkube.runtime.models import CausalLM, build_model, model_config, read_model_config
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.sampling import SamplingParams, choose_next, generate
from llmkube.runtime.tokenizer import byte_tokenizer
from llmkube.runtime.training.checkpoint import (
    CheckpointState,
    checkpoint_uri,
    complete_checkpoints,
    prune_checkpoints,
    save_checkpoint,
)
from llmkube.runtime.training.optim import learning_rate, make_optimizer
from llmkube.storage import open_store

CONFIG = GptConfig(n_layer=2, n_head=2, d_model=32, context_length=32, dropout=0.0, vocab_size=64)


def model() -> CausalLM:
    torch.manual_seed(0)
    built = build_model(CONFIG)
    # A random model at GPT-2's init predicts nearly uniformly; larger weights make greedy
    # decoding depend on the whole context, which is what the cache checks need.
    with torch.no_grad():
        for parameter in built.parameters():
            parameter.mul_(20)
    return built.eval()


def greedy_without_cache(net: nn.Module, prompt: list[int], steps: int) -> list[int]:
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            sequence.append(int(net(torch.tensor([sequence]))[0, -1].argmax()))
    return sequence[len(prompt) :]


def test_kv_cache_decoding_matches_full_recomputation() -> None:
    net = model()
    prompt = [3, 17, 42, 5, 9]
    expected = greedy_without_cache(net, prompt, 12)
    assert len(set(expected)) > 1
    assert generate(net, prompt, 12) == expected


def test_masked_batch_with_explicit_positions_matches_each_row_alone() -> None:
    net = model()
    short, long = [4, 8, 15], [16, 23, 42, 7, 1]
    # Left-pad the short row; the mask hides the padding and positions start at 0 for each row.
    tokens = torch.tensor([[0, 0, *short], long])
    positions = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])
    valid = torch.tensor([[False, False, True, True, True], [True] * 5])
    mask = torch.ones(5, 5, dtype=torch.bool).tril()[None] & valid[:, None, :]
    mask |= torch.eye(5, dtype=torch.bool)[None]  # padded rows attend to themselves only
    with torch.no_grad():
        batched = net(tokens, positions=positions, mask=mask[:, None])
        alone_short = net(torch.tensor([short]))
        alone_long = net(torch.tensor([long]))
    torch.testing.assert_close(batched[0, 2:], alone_short[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched[1], alone_long[0], atol=1e-4, rtol=1e-4)


def test_logits_at_gives_one_step_per_row_as_the_full_output_would() -> None:
    net = model()
    tokens = torch.tensor([[4, 8, 15, 16, 23], [42, 7, 1, 9, 3]])
    at = torch.tensor([2, 4])
    with torch.no_grad():
        full = net(tokens)
        picked = net(tokens, logits_at=at)
    assert picked.shape == (2, 1, CONFIG.vocab_size)
    torch.testing.assert_close(picked[:, 0], full[torch.arange(2), at], atol=1e-5, rtol=1e-5)


def test_context_overflow_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="exceed the context length 32"):
        model()(torch.zeros(1, 33, dtype=torch.long))


def test_sampling_rules() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert choose_next(logits, SamplingParams(temperature=0.0)).item() == 1
    assert choose_next(logits, SamplingParams(temperature=1.0, top_k=1)).item() == 1
    assert choose_next(logits, SamplingParams(temperature=1.0, top_p=0.01)).item() == 1
    draws = {
        int(choose_next(logits, SamplingParams(temperature=5.0, top_k=2)).item())
        for _ in range(200)
    }
    assert draws == {1, 3}
    net = model()
    seeded = [generate(net, [1, 2], 8, SamplingParams(temperature=1.0), seed=7) for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_artifact_round_trip_keeps_weights_and_tied_head(tmp_path: Path) -> None:
    net = model()
    store = open_store("file://")
    uri = f"file://{tmp_path}/model"
    save_artifact(
        store,
        uri,
        model=net,
        config=CONFIG,
        tokenizer=byte_tokenizer(),
        evaluation={"eval_loss": 1.0},
        card="# test\n",
    )
    loaded = load_artifact(store, uri)
    tokens = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), net(tokens))
    state = loaded.model.state_dict(keep_vars=True)
    assert state["lm_head.weight"] is state["token_embedding.weight"]
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("héllo").ids) == "héllo"


def test_weight_decay_only_on_matrices() -> None:
    net = build_model(CONFIG)
    spec = TrainingSpec(max_steps=10, weight_decay=0.1)
    decayed, plain = make_optimizer(net, spec, fused=False).param_groups
    names = {id(p): n for n, p in net.named_parameters()}
    decayed_names = {names[id(p)] for p in decayed["params"]}
    plain_names = {names[id(p)] for p in plain["params"]}
    assert decayed["weight_decay"] == 0.1
    assert plain["weight_decay"] == 0.0
    assert all(name.endswith("weight") and "ln" not in name for name in decayed_names)
    assert "token_embedding.weight" in plain_names
    assert "position_embedding.weight" in plain_names
    assert any(name.endswith("bias") for name in plain_names)
    assert any(".ln_1." in name for name in plain_names)
    # The tied head is the embedding: counted once.
    assert len(decayed_names) + len(plain_names) == len(list(net.parameters()))


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("cosine", 0, 0.1),
        ("cosine", 9, 1.0),
        ("cosine", 99, 0.1),
        ("linear", 99, 0.1),
        ("linear", 10, 1.0),
        ("constant", 99, 1.0),
    ],
)
def test_learning_rate_schedule(schedule: str, step: int, expected: float) -> None:
    spec = TrainingSpec.model_validate(
        {
            "maxSteps": 100,
            "learningRate": 1.0,
            "minLearningRate": 0.1,
            "warmupSteps": 10,
            "schedule": schedule,
        }
    )
    assert learning_rate(spec, step, 100) == pytest.approx(expected, abs=1e-9)


def test_only_complete_checkpoints_count_and_the_newest_are_kept(tmp_path: Path) -> None:
    store = open_store("file://")
    output = f"file://{tmp_path}/out"
    for step in (10, 20, 30):
        save_checkpoint(
            store,
            checkpoint_uri(output, step),
            weights=b"w",
            optimizer={},
            rng_states=[],
            state=CheckpointState(step=step, samples=step, tokens_seen=step, total_steps=40),
        )
    # A checkpoint whose writer died before state.json: ignored, never resumed from.
    store.write_bytes(checkpoint_uri(output, 40) + "/model.safetensors", b"partial")
    assert [step for step, _ in complete_checkpoints(store, output)] == [10, 20, 30]
    prune_checkpoints(store, output, keep=2)
    assert [step for step, _ in complete_checkpoints(store, output)] == [20, 30]
    assert not (tmp_path / "out" / "checkpoints" / "step-00000010").exists()


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        ([], []),
        (
            [
                "s3://b/out/checkpoints/step-00000200/state.json",
                "s3://b/out/checkpoints/step-00000100/model.safetensors",
                "s3://b/out/checkpoints/step-00000100/state.json",
                "s3://b/out/checkpoints/step-00000300/model.safetensors",  # still being written
            ],
            [
                (100, "s3://b/out/checkpoints/step-00000100"),
                (200, "s3://b/out/checkpoints/step-00000200"),
            ],
        ),
        (["file:///d/out/checkpoints/step-00000050/state.json.tmp"], []),
        (["file:///d/out/model/state.json", "file:///d/out/step-00000050/state.json"], []),
    ],
)
def test_complete_checkpoints_from_a_listing(
    listing: list[str], expected: list[tuple[int, str]]
) -> None:
    assert complete_checkpoints_among(listing) == expected


def test_a_model_is_found_by_the_architecture_its_config_names() -> None:
    config = GptConfig(
        n_layer=1, n_head=1, d_model=8, context_length=16, dropout=0.0, vocab_size=32
    )
    stored = config.model_dump_json(by_alias=True).encode()  # as config.json holds it
    assert read_model_config(stored) == config
    assert isinstance(build_model(config), CausalLM)
    with pytest.raises(ValueError, match=r"unknown model architecture 'llama'; llmkube builds gpt"):
        model_config({**json.loads(stored), "architecture": "llama"})
    # A Hugging Face folder's config.json is told apart, not misread as a GPT's.
    with pytest.raises(ModelError, match="Hugging Face llama model folder, not an llmkube GPT"):
        read_model_config(json.dumps({"model_type": "llama"}).encode())
