"""The function every Ray Train worker runs. A restarted worker group runs it again from the top:
it finds the newest complete checkpoint and carries on from that step and data position."""

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import BaseModel
from tokenizers import Tokenizer
from torch import nn

from llmkube.api.artifacts import MODEL_DIR
from llmkube.api.runconfig import TrainingRunConfig
from llmkube.runtime.artifact import load_artifact, load_weights, save_artifact, weights_bytes
from llmkube.runtime.data.manifest import TOKENIZER_FILE, DataManifest
from llmkube.runtime.data.shards import Sequences, TrainingBatches, open_splits
from llmkube.runtime.models import CausalLM, ModelConfig, build_model
from llmkube.runtime.models import model_config as model_config_of
from llmkube.runtime.training.checkpoint import (
    OPTIMIZER_FILE,
    RNG_FILE,
    WEIGHTS_FILE,
    CheckpointState,
    checkpoint_uri,
    complete_checkpoints,
    load_state,
    load_torch,
    prune_checkpoints,
    save_checkpoint,
)
from llmkube.runtime.training.evaluate import evaluate, samples
from llmkube.runtime.training.optim import learning_rate, make_optimizer
from llmkube.runtime.training.reporter import Reporter
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.uri import join

log = logging.getLogger("llmkube.train")


class LoopConfig(BaseModel):
    """What the driver hands every worker."""

    run: dict[str, Any]
    """The run config, on the wire."""
    cache_uri: str
    manifest: DataManifest
    model: dict[str, Any]
    """The model config actually built (vocabulary from the tokenizer, or the base model's)."""
    total_steps: int
    scratch: str
    """A local folder the driver removes at the end."""


def log_every(total_steps: int) -> int:
    return max(1, min(50, total_steps // 20))


def _shard_store(config: TrainingRunConfig, cache_uri: str) -> ObjectStore:
    return open_store(cache_uri, config.storage)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    setup = LoopConfig.model_validate(loop_config)
    config = TrainingRunConfig.model_validate(setup.run)
    model_config = model_config_of(setup.model)
    spec = config.training
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    torch.set_num_threads(config.scaling.cpus_per_worker)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    store = open_store(config.output, config.storage)
    scratch = Path(setup.scratch) / f"rank-{rank}"
    scratch.mkdir(parents=True, exist_ok=True)
    train_split, validation = open_splits(
        _shard_store(config, setup.cache_uri),
        setup.cache_uri,
        setup.manifest,
        model_config.context_length,
        scratch,
    )
    batches = TrainingBatches(
        train_split,
        batch_size=spec.batch_size,
        accumulation=spec.gradient_accumulation,
        workers=world,
        seed=spec.seed,
    )
    tokenizer = Tokenizer.from_str(
        _shard_store(config, setup.cache_uri)
        .read_bytes(join(setup.cache_uri, TOKENIZER_FILE))
        .decode()
    )

    torch.manual_seed(spec.seed)
    if config.base is not None:
        model = load_artifact(open_store(config.base, config.storage), config.base).model
        model.train()
    else:
        model = build_model(model_config)
    checkpoints = complete_checkpoints(store, config.output)
    state = CheckpointState(step=0, samples=0, tokens_seen=0, total_steps=setup.total_steps)
    resumed_from = None
    if checkpoints:
        resumed_from = checkpoints[-1][1]
        state = load_state(store, resumed_from)
        load_weights(model, store.read_bytes(join(resumed_from, WEIGHTS_FILE)))
    if rank == 0:
        parameters = sum(p.numel() for p in model.parameters())
        log.info(
            "model: %s parameters, %d layers, d_model %d, context %d, vocabulary %d; "
            "%d worker(s) on %s",
            f"{parameters:,}",
            model_config.n_layer,
            model_config.d_model,
            model_config.context_length,
            model_config.vocab_size,
            world,
            device.type,
        )
    raw_model = model
    ddp_model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(raw_model, spec, fused=on_gpu)
    if resumed_from is not None:
        optimizer.load_state_dict(load_torch(store, resumed_from, OPTIMIZER_FILE))
        rng_states = load_torch(store, resumed_from, RNG_FILE)
        if rank < len(rng_states):
            torch.set_rng_state(rng_states[rank])
    else:
        torch.manual_seed(spec.seed + rank)
    trained = torch.compile(ddp_model) if spec.compile else ddp_model
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)
    use_autocast = on_gpu and autocast_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=on_gpu and spec.precision == "fp16")

    reporter = (
        Reporter(
            store,
            config.output,
            job=config.job.name,
            total_steps=setup.total_steps,
            start_step=state.step,
        )
        if rank == 0
        else None
    )

    def run_evaluation(step: int) -> dict[str, Any]:
        results: dict[str, Any] = evaluate(
            raw_model,
            validation,
            batches=config.evaluation.batches,
            batch_size=spec.batch_size,
            device=device,
            rank=rank,
            world=world,
        )
        if reporter is not None:
            results["samples"] = samples(
                raw_model,
                tokenizer,
                config.evaluation.sample_prompts,
                config.evaluation.max_new_tokens,
                device,
            )
            reporter.evaluation(step, results)
        return results

    if state.step == 0:
        run_evaluation(0)
    tokens_per_step = batches.samples_per_step * model_config.context_length
    logged_every = log_every(setup.total_steps)
    interval_start, interval_steps = time.monotonic(), 0
    loss_sum = torch.zeros((), device=device)
    last_eval: dict[str, Any] | None = None
    last_train_loss: float | None = None
    for step in range(state.step, setup.total_steps):
        rate = learning_rate(spec, step, setup.total_steps)
        for group in optimizer.param_groups:
            group["lr"] = rate
        for micro in range(spec.gradient_accumulation):
            inputs, targets = batches.batch(step, micro, rank)
            inputs, targets = inputs.to(device), targets.to(device)
            last_micro = micro == spec.gradient_accumulation - 1
            sync = (
                contextlib.nullcontext() if last_micro or world == 1 else ddp_model.no_sync()  # type: ignore[operator]
            )
            with sync, torch.autocast(device.type, autocast_dtype, enabled=use_autocast):
                logits = trained(inputs)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
                scaled = loss / spec.gradient_accumulation
            scaler.scale(scaled).backward()  # type: ignore[no-untyped-call]
            loss_sum += scaled.detach()
        if spec.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(raw_model.parameters(), spec.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        interval_steps += 1
        state.step, state.samples = done, done * batches.samples_per_step
        state.tokens_seen = done * tokens_per_step
        if done % logged_every == 0 or done == setup.total_steps:
            if world > 1:
                dist.all_reduce(loss_sum)
            last_train_loss = float(loss_sum) / interval_steps / world
            elapsed = time.monotonic() - interval_start
            if reporter is not None:
                reporter.train_step(
                    done,
                    loss=last_train_loss,
                    learning_rate=rate,
                    tokens_per_second=interval_steps * tokens_per_step / max(elapsed, 1e-9),
                    tokens_seen=state.tokens_seen,
                    epoch=batches.epoch_at(done),
                )
            loss_sum.zero_()
            interval_start, interval_steps = time.monotonic(), 0
        if done % config.evaluation.interval == 0 or done == setup.total_steps:
            last_eval = run_evaluation(done)
        if done % config.checkpoint.interval == 0 or done == setup.total_steps:
            _checkpoint(store, config, raw_model, optimizer, state, rank, world, reporter)
            ray.train.report(
                {"step": done, **({"eval_loss": last_eval["eval_loss"]} if last_eval else {})}
            )

    if reporter is not None:
        final = last_eval if last_eval is not None else run_evaluation(state.step)
        _publish(
            store, config, raw_model, model_config, tokenizer, final, state, last_train_loss, setup
        )


def _checkpoint(
    store: ObjectStore,
    config: TrainingRunConfig,
    model: CausalLM,
    optimizer: torch.optim.Optimizer,
    state: CheckpointState,
    rank: int,
    world: int,
    reporter: Reporter | None,
) -> None:
    rng_states: list[Any] = [None] * world
    if world > 1:
        dist.all_gather_object(rng_states, torch.get_rng_state())
    else:
        rng_states = [torch.get_rng_state()]
    if rank == 0:
        uri = checkpoint_uri(config.output, state.step)
        save_checkpoint(
            store,
            uri,
            weights=weights_bytes(model),
            optimizer=optimizer.state_dict(),
            rng_states=rng_states,
            state=state,
        )
        prune_checkpoints(store, config.output, config.checkpoint.keep)
        assert reporter is not None
        reporter.checkpoint(state.step, uri)
    if world > 1:
        # Nobody runs ahead of a checkpoint that is still being written.
        dist.barrier()


def _publish(
    store: ObjectStore,
    config: TrainingRunConfig,
    model: CausalLM,
    model_config: ModelConfig,
    tokenizer: Tokenizer,
    final: dict[str, Any],
    state: CheckpointState,
    train_loss: float | None,
    setup: LoopConfig,
) -> None:
    uri = join(config.output, MODEL_DIR)
    evaluation = {
        "step": state.step,
        "train_loss": train_loss,
        "tokens_seen": state.tokens_seen,
        "validation_tokens": setup.manifest.stats.validation_tokens,
        **final,
    }
    card = _card(config, model_config, evaluation)
    save_artifact(
        store,
        uri,
        model=model,
        config=model_config,
        tokenizer=tokenizer,
        evaluation=evaluation,
        card=card,
    )
    log.info("published the model to %s (eval loss %.4f)", uri, final["eval_loss"])


def _card(config: TrainingRunConfig, model: ModelConfig, evaluation: dict[str, Any]) -> str:
    return (
        f"# {config.job.name}\n\n"
        f"llmkube GPT: {model.n_layer} layers, {model.n_head} heads, d_model {model.d_model}, "
        f"context {model.context_length}, vocabulary {model.vocab_size}.\n\n"
        f"Trained for {evaluation['step']} steps ({evaluation['tokens_seen']:,} tokens) on "
        f"{config.dataset.source}.\n\n"
        f"| eval loss | perplexity | accuracy |\n|---|---|---|\n"
        f"| {evaluation['eval_loss']:.4f} | {evaluation['perplexity']:.2f} | "
        f"{evaluation['accuracy']:.3f} |\n"
    )


def sequences_in(manifest: DataManifest, context_length: int) -> int:
    return sum(max(0, (shard.tokens - 1) // context_length) for shard in manifest.train)


__all__ = ["LoopConfig", "Sequences", "sequences_in", "train_loop_per_worker"]
