"""The training loop's stages without Ray: one training step, resuming from a checkpoint, and
evaluate-and-report, on a tiny GPT on CPU with a file:// store."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmkube.api import LLMTrainingJob
from llmkube.api.runconfig import training_run_config
from llmkube.runtime.artifact import weights_bytes
from llmkube.runtime.data.shards import Sequences, TrainingBatches
from llmkube.runtime.models import build_model
from llmkube.runtime.prompts import PlainPrompts
from llmkube.runtime.tokenizer import byte_tokenizer
from llmkube.runtime.training.checkpoint import CheckpointState, checkpoint_uri, save_checkpoint
from llmkube.runtime.training.loop import Worker, evaluate_and_report, resume, train_step
from llmkube.runtime.training.optim import learning_rate, make_optimizer
from llmkube.runtime.training.reporter import Reporter
from llmkube.storage import open_store

TOTAL_STEPS = 4


def worker(tmp_path: Path, *, rank: int = 0, seed: int = 0) -> Worker:
    job = LLMTrainingJob.model_validate(
        {
            "apiVersion": "llmkube.io/v1alpha1",
            "kind": "LLMTrainingJob",
            "metadata": {"name": "stages"},
            "spec": {
                "model": {
                    "preset": "tiny",
                    "overrides": {"nLayer": 1, "nHead": 1, "dModel": 16, "contextLength": 8},
                },
                "tokenizer": {"type": "byte"},
                "dataset": {"source": "file:///unused/"},
                "training": {
                    "maxSteps": TOTAL_STEPS,
                    "batchSize": 2,
                    "gradientAccumulation": 2,
                    "learningRate": 0.01,
                },
                "evaluation": {"interval": 2, "batches": 2, "samplePrompts": ["ab"]},
                "checkpoint": {"interval": 2, "keep": 1},
                "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 1},
                "output": f"file://{tmp_path}/out",
            },
        }
    )
    config = training_run_config(job)
    tokenizer = byte_tokenizer()
    assert config.model is not None
    model_config = config.model.model_copy(update={"vocab_size": tokenizer.get_vocab_size()})
    torch.manual_seed(seed)
    model = build_model(model_config)
    store = open_store("file://")
    stream = np.arange(400) % 200
    return Worker(
        config=config,
        model_config=model_config,
        total_steps=TOTAL_STEPS,
        rank=rank,
        world=1,
        device=torch.device("cpu"),
        model=model,
        ddp=model,
        trained=model,
        optimizer=make_optimizer(model, config.training, fused=False),
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        autocast_dtype=None,
        batches=TrainingBatches(
            Sequences([stream], context_length=8), batch_size=2, accumulation=2, workers=1, seed=0
        ),
        validation=Sequences([stream[:100]], context_length=8),
        tokenizer=tokenizer,
        prompts=PlainPrompts(tokenizer),
        model_folder=None,
        store=store,
        state=CheckpointState(step=0, samples=0, tokens_seen=0, total_steps=TOTAL_STEPS),
        reporter=(
            Reporter(store, config.output, job="stages", total_steps=TOTAL_STEPS, start_step=0)
            if rank == 0
            else None
        ),
    )


def test_a_training_step_uses_the_scheduled_rate_and_moves_every_weight(tmp_path: Path) -> None:
    trainer = worker(tmp_path)
    before = [parameter.detach().clone() for parameter in trainer.model.parameters()]
    loss_sum = torch.zeros(())
    rate = train_step(trainer, 1, loss_sum)
    assert rate == learning_rate(trainer.config.training, 1, TOTAL_STEPS)
    assert trainer.optimizer.param_groups[0]["lr"] == rate
    # Both micro-batches' halves of the loss: about ln(vocabulary) for an untrained model.
    assert 4.0 < float(loss_sum) < 7.0
    after = list(trainer.model.parameters())
    assert all(not torch.equal(old, new) for old, new in zip(before, after, strict=True))
    assert all(parameter.grad is None for parameter in after), "gradients are cleared"


def test_resume_loads_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    trained = worker(tmp_path)
    assert resume(trained.store, trained.config.output, trained.model, trained.optimizer, 0) is None
    train_step(trained, 0, torch.zeros(()))
    state = CheckpointState(step=1, samples=4, tokens_seen=32, total_steps=TOTAL_STEPS)
    save_checkpoint(
        trained.store,
        checkpoint_uri(trained.config.output, 1),
        weights=weights_bytes(trained.model),
        optimizer=trained.optimizer.state_dict(),
        rng_states=[torch.get_rng_state()],
        state=state,
    )
    expected_draw = torch.rand(3)  # what the RNG gives right after the checkpoint
    fresh = worker(tmp_path, seed=1)
    resumed = resume(fresh.store, fresh.config.output, fresh.model, fresh.optimizer, 0)
    assert resumed == state
    for mine, theirs in zip(
        fresh.model.state_dict().values(), trained.model.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, theirs)
    assert (
        fresh.optimizer.state_dict()["state"].keys()
        == trained.optimizer.state_dict()["state"].keys()
    )
    assert torch.equal(torch.rand(3), expected_draw)


@pytest.mark.parametrize("rank", [0, 1])
def test_evaluation_is_reported_by_rank_zero_with_sample_completions(
    tmp_path: Path, rank: int
) -> None:
    evaluator = worker(tmp_path, rank=rank)
    results = evaluate_and_report(evaluator, 2)
    assert results["eval_loss"] > 0
    assert results["perplexity"] == pytest.approx(np.exp(results["eval_loss"]), rel=1e-4)
    metrics = tmp_path / "out" / "metrics.jsonl"
    if rank != 0:
        assert "samples" not in results
        assert not metrics.exists()
        return
    assert [sample["prompt"] for sample in results["samples"]] == ["ab"]
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in records] == [("eval", 2)]
    assert records[0]["eval_loss"] == pytest.approx(results["eval_loss"])
