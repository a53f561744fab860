"""The function every Ray Train worker runs. A restarted worker group runs it again from the top:
it finds the newest complete checkpoint and carries on from that step and data position."""

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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

from llmkube.api.artifacts import MODEL_DIR, PUBLISHED_LAST
from llmkube.api.run_identity import identity_hash, output_identity, run_identity
from llmkube.api.runconfig import GptConfig, TrainingRunConfig
from llmkube.api.tuning import reported_metrics
from llmkube.runtime.artifact import load_artifact, load_weights, save_artifact, weights_bytes
from llmkube.runtime.data.examples import IGNORED
from llmkube.runtime.data.manifest import TOKENIZER_FILE, DataManifest
from llmkube.runtime.data.shards import Sequences, TrainingBatches, open_splits
from llmkube.runtime.models import CausalLM, ModelConfig, build_model
from llmkube.runtime.models import model_config as model_config_of
from llmkube.runtime.models.base import parameter_counts
from llmkube.runtime.models.huggingface import HuggingFaceConfig, HuggingFaceLM, load_tokenizer
from llmkube.runtime.prompts import PlainPrompts, PretrainedPrompts, PromptCodec
from llmkube.runtime.training import pretrained
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
from llmkube.storage.store import LocalStore
from llmkube.storage.uri import join
from llmkube.storage.versions import publish_version

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


@dataclass
class Worker:
    """One worker's training state: what `set_up` builds (or resumes) and the stages use."""

    config: TrainingRunConfig
    model_config: ModelConfig
    total_steps: int
    rank: int
    world: int
    device: torch.device
    model: CausalLM
    """The model itself: what is evaluated, checkpointed and published."""
    ddp: nn.Module
    """The model as Ray Train prepared it (DistributedDataParallel with several workers)."""
    trained: Callable[[torch.Tensor], torch.Tensor]
    """What a training step calls: `ddp`, compiled when training.compile is set."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    batches: TrainingBatches
    validation: Sequences
    tokenizer: Tokenizer | None
    """llmkube's own tokenizer (published with a GPT); None fine-tuning a pretrained model."""
    prompts: PromptCodec
    """How evaluation samples are encoded and decoded."""
    model_folder: Path | None
    """This machine's copy of the pretrained model; None for a GPT."""
    store: ObjectStore
    state: CheckpointState
    reporter: Reporter | None
    """Rank 0's; None on the other workers."""

    @property
    def use_autocast(self) -> bool:
        return self.device.type == "cuda" and self.autocast_dtype is not None


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    setup = LoopConfig.model_validate(loop_config)
    worker = set_up(setup)
    config = worker.config
    if worker.state.step == 0:
        evaluate_and_report(worker, 0)
    tokens_per_step = worker.batches.samples_per_step * worker.model_config.context_length
    logged_every = log_every(worker.total_steps)
    interval_start, interval_steps = time.monotonic(), 0
    loss_sum = torch.zeros((), device=worker.device)
    last_eval: dict[str, Any] | None = None
    last_train_loss: float | None = None
    for step in range(worker.state.step, worker.total_steps):
        rate = train_step(worker, step, loss_sum)
        done = step + 1
        interval_steps += 1
        worker.state.step, worker.state.samples = done, done * worker.batches.samples_per_step
        worker.state.tokens_seen = done * tokens_per_step
        if done % logged_every == 0 or done == worker.total_steps:
            if worker.world > 1:
                dist.all_reduce(loss_sum)
            last_train_loss = float(loss_sum) / interval_steps / worker.world
            elapsed = time.monotonic() - interval_start
            if worker.reporter is not None:
                worker.reporter.train_step(
                    done,
                    loss=last_train_loss,
                    learning_rate=rate,
                    tokens_per_second=interval_steps * tokens_per_step / max(elapsed, 1e-9),
                    tokens_seen=worker.state.tokens_seen,
                    epoch=worker.batches.epoch_at(done),
                )
            loss_sum.zero_()
            interval_start, interval_steps = time.monotonic(), 0
        last = done == worker.total_steps
        evaluated = done % config.evaluation.interval == 0 or last
        if evaluated:
            last_eval = evaluate_and_report(worker, done)
        checkpointed = done % config.checkpoint.interval == 0 or last
        if checkpointed:
            _checkpoint(worker)
        if (evaluated or checkpointed) and not last:
            ray.train.report(reported_metrics(done, worker.total_steps, last_eval))
    final = last_eval
    if final is None:  # resumed from the checkpoint of the last step
        final = evaluate_and_report(worker, worker.state.step)
    if worker.reporter is not None:
        _publish(worker, final, last_train_loss, setup.manifest.stats.validation_tokens)
    # Reported after publishing: a search's scheduler may stop a trial at any report, and this
    # trial's model is whole by now.
    ray.train.report(reported_metrics(worker.state.step, worker.total_steps, final))


def set_up(setup: LoopConfig) -> Worker:
    """Everything a worker needs, from the newest complete checkpoint when there is one."""
    config = TrainingRunConfig.model_validate(setup.run)
    model_config = model_config_of(setup.model)
    spec = config.training
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(config.scaling.cpus_per_worker)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    store = open_store(config.output, config.storage)
    scratch = Path(setup.scratch) / f"rank-{rank}"
    scratch.mkdir(parents=True, exist_ok=True)
    shard_store = open_store(setup.cache_uri, config.storage)
    train_split, validation = open_splits(
        shard_store, setup.cache_uri, setup.manifest, model_config.context_length, scratch
    )
    batches = TrainingBatches(
        train_split,
        batch_size=spec.batch_size,
        accumulation=spec.gradient_accumulation,
        workers=world,
        seed=spec.seed,
    )
    torch.manual_seed(spec.seed)
    tokenizer: Tokenizer | None = None
    folder: Path | None = None
    model: CausalLM
    if config.pretrained is not None:
        assert isinstance(model_config, HuggingFaceConfig)
        folder = pretrained.model_folder(config)
        model = pretrained.load(
            config.pretrained,
            folder,
            model_config,
            gradient_checkpointing=spec.gradient_checkpointing,
        )
        prompts: PromptCodec = PretrainedPrompts(
            load_tokenizer(folder), chat=config.dataset.format == "chat"
        )
    else:
        tokenizer = Tokenizer.from_str(
            shard_store.read_bytes(join(setup.cache_uri, TOKENIZER_FILE)).decode()
        )
        prompts = PlainPrompts(tokenizer)
        base = config.base_source()
        if base is not None:
            model = load_artifact(open_store(base, config.storage), base).model
        else:
            assert isinstance(model_config, GptConfig)
            model = build_model(model_config)
    model.train()
    if rank == 0:
        _log_model(model, model_config, world, device)
    ddp = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, spec, fused=device.type == "cuda")
    state = resume(store, config.output, model, optimizer, rank)
    if state is None:
        state = CheckpointState(step=0, samples=0, tokens_seen=0, total_steps=setup.total_steps)
        torch.manual_seed(spec.seed + rank)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)
    return Worker(
        config=config,
        model_config=model_config,
        total_steps=setup.total_steps,
        rank=rank,
        world=world,
        device=device,
        model=model,
        ddp=ddp,
        trained=torch.compile(ddp) if spec.compile else ddp,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(
            "cuda", enabled=device.type == "cuda" and spec.precision == "fp16"
        ),
        autocast_dtype=autocast_dtype,
        batches=batches,
        validation=validation,
        tokenizer=tokenizer,
        prompts=prompts,
        model_folder=folder,
        store=store,
        state=state,
        reporter=(
            Reporter(
                store,
                config.output,
                job=config.job.name,
                total_steps=setup.total_steps,
                start_step=state.step,
                parameters=parameter_counts(model),
            )
            if rank == 0
            else None
        ),
    )


def resume(
    store: ObjectStore,
    output: str,
    model: CausalLM,
    optimizer: torch.optim.Optimizer,
    rank: int,
) -> CheckpointState | None:
    """Load the newest complete checkpoint under `output` into the model, the optimizer and
    this worker's RNG; its state, or None when there is none."""
    checkpoints = complete_checkpoints(store, output)
    if not checkpoints:
        return None
    uri = checkpoints[-1][1]
    state = load_state(store, uri)
    load_weights(model, store.read_bytes(join(uri, WEIGHTS_FILE)))
    optimizer.load_state_dict(load_torch(store, uri, OPTIMIZER_FILE))
    rng_states = load_torch(store, uri, RNG_FILE)
    if rank < len(rng_states):
        torch.set_rng_state(rng_states[rank])
    return state


def train_step(worker: Worker, step: int, loss_sum: torch.Tensor) -> float:
    """One optimizer step (0-based `step`) over its micro-batches; adds this worker's loss to
    `loss_sum`; returns the learning rate it used."""
    spec = worker.config.training
    rate = learning_rate(spec, step, worker.total_steps)
    for group in worker.optimizer.param_groups:
        group["lr"] = rate
    for micro in range(spec.gradient_accumulation):
        inputs, targets = worker.batches.batch(step, micro, worker.rank)
        inputs, targets = inputs.to(worker.device), targets.to(worker.device)
        last_micro = micro == spec.gradient_accumulation - 1
        sync = (
            contextlib.nullcontext() if last_micro or worker.world == 1 else worker.ddp.no_sync()  # type: ignore[operator]
        )
        with (
            sync,
            torch.autocast(worker.device.type, worker.autocast_dtype, enabled=worker.use_autocast),
        ):
            logits = worker.trained(inputs)
            loss = masked_loss(logits, targets)
            scaled = loss / spec.gradient_accumulation
        worker.scaler.scale(scaled).backward()  # type: ignore[no-untyped-call]
        loss_sum += scaled.detach()
    if spec.grad_clip > 0:
        worker.scaler.unscale_(worker.optimizer)
        nn.utils.clip_grad_norm_(worker.model.parameters(), spec.grad_clip)
    worker.scaler.step(worker.optimizer)
    worker.scaler.update()
    worker.optimizer.zero_grad(set_to_none=True)
    return rate


def masked_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the targets that carry loss; zero (not NaN) when a batch of
    packed examples holds none."""
    total = F.cross_entropy(
        logits.view(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=IGNORED,
        reduction="sum",
    )
    return total / (targets != IGNORED).sum().clamp(min=1)


def evaluate_and_report(worker: Worker, step: int) -> dict[str, Any]:
    """Validation loss, perplexity and accuracy (split across workers); rank 0 adds sample
    completions and reports them."""
    config = worker.config
    results: dict[str, Any] = evaluate(
        worker.model,
        worker.validation,
        batches=config.evaluation.batches,
        batch_size=config.training.batch_size,
        device=worker.device,
        rank=worker.rank,
        world=worker.world,
    )
    if worker.reporter is not None:
        results["samples"] = samples(
            worker.model,
            worker.prompts,
            config.evaluation.sample_prompts,
            config.evaluation.max_new_tokens,
            worker.device,
        )
        worker.reporter.evaluation(step, results)
    return results


def _log_model(model: CausalLM, config: ModelConfig, world: int, device: torch.device) -> None:
    parameters, trainable = parameter_counts(model)
    log.info(
        "model: %s parameters (%s trainable, %.2f%%), %d layers, d_model %d, context %d, "
        "vocabulary %d; %d worker(s) on %s",
        f"{parameters:,}",
        f"{trainable:,}",
        100 * trainable / max(parameters, 1),
        config.n_layer,
        config.d_model,
        config.context_length,
        config.vocab_size,
        world,
        device.type,
    )


def _checkpoint(worker: Worker) -> None:
    rng_states: list[Any] = [None] * worker.world
    if worker.world > 1:
        dist.all_gather_object(rng_states, torch.get_rng_state())
    else:
        rng_states = [torch.get_rng_state()]
    if worker.reporter is not None:
        output = worker.config.output
        identity = run_identity(worker.config)
        state = replace(worker.state, identity=identity, identity_hash=identity_hash(identity))
        uri = checkpoint_uri(output, state.step)
        save_checkpoint(
            worker.store,
            uri,
            weights=weights_bytes(worker.model),
            optimizer=worker.optimizer.state_dict(),
            rng_states=rng_states,
            state=state,
        )
        prune_checkpoints(worker.store, output, worker.config.checkpoint.keep)
        worker.reporter.checkpoint(state.step, uri)
    if worker.world > 1:
        # Nobody runs ahead of a checkpoint that is still being written.
        dist.barrier()


def _publish(
    worker: Worker, final: dict[str, Any], train_loss: float | None, validation_tokens: int
) -> None:
    config, state = worker.config, worker.state
    evaluation = {
        "step": state.step,
        "train_loss": train_loss,
        "tokens_seen": state.tokens_seen,
        "validation_tokens": validation_tokens,
        **final,
    }
    with tempfile.TemporaryDirectory(prefix="llmkube-publish-") as scratch:
        staged = Path(scratch)
        if config.pretrained is not None:
            assert isinstance(worker.model, HuggingFaceLM)
            assert worker.model_folder is not None
            pretrained.stage(
                staged,
                config=config,
                model=worker.model,
                folder=worker.model_folder,
                evaluation=evaluation,
            )
        else:
            assert isinstance(worker.model_config, GptConfig)
            assert worker.tokenizer is not None
            save_artifact(
                LocalStore(),
                staged.as_uri(),
                model=worker.model,
                config=worker.model_config,
                tokenizer=worker.tokenizer,
                evaluation=evaluation,
                card=_card(config, worker.model_config, evaluation),
            )
        pointer = publish_version(
            worker.store,
            config.output,
            staged,
            run=identity_hash(output_identity(config)),
            provenance=config.model_dump_json(by_alias=True, indent=2).encode(),
            last=PUBLISHED_LAST,
        )
    log.info(
        "published the model to %s as version %s (eval loss %.4f)",
        join(config.output, MODEL_DIR),
        pointer.version,
        final["eval_loss"],
    )


def _card(config: TrainingRunConfig, model: GptConfig, evaluation: dict[str, Any]) -> str:
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
    if manifest.row_tokens is not None:
        return sum(shard.tokens // manifest.row_tokens for shard in manifest.train)
    return sum(max(0, (shard.tokens - 1) // context_length) for shard in manifest.train)


__all__ = ["LoopConfig", "Sequences", "sequences_in", "train_loop_per_worker"]
