"""Serving throughput and latency, four ways, same model, same prompts, same machine, one run:

(a) the engine in-process without batching (one sequence at a time),
(b) the engine in-process with continuous batching,
(c) the full HTTP path: Ray Serve as `llmkube run` starts it (the replica answering on its own
    port), the OpenAI API, streaming, through a real HTTP client (with `--stream-interval N`,
    also (c) again with serving.streamInterval N; with `--via-proxy`, also (c) through Serve's
    proxy, as on a cluster, at interval 1 and N),
(d) the ideal: the bare model's decode step at a static batch of 16 with a filled KV cache,
    which bounds what any batching can reach here.

For (a)-(c) at concurrency 1, 4 and 16: generated tokens/s, p50/p99 time to first token and
inter-token latency. Then the goal ratios: (b)@16 / (d) >= 0.8; (c)@16 / (b)@16 >= 0.9; and
(c)@1 p50 TTFT - (b)@1 p50 TTFT <= 10 ms.

To split (c)'s loss into what Ray's own processes cost by being there and what the HTTP path
costs on top, (b)@16 also runs while Ray Serve is up and idle ("(b) beside idle Ray"),
alternating with (c)@16 at interval 1 for `--pairs` rounds; their ratio is the median of the
pairs, which drift on a noisy machine moves much less than the one-shot ratios.

    .venv/bin/python benchmarks/serve_throughput.py [--preset tiny|small] [--max-tokens 64]
        [--stream-interval 4] [--via-proxy]
"""

import argparse
import asyncio
import itertools
import json
import pydoc_data.topics
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

from llmkube.api.deployment import ServingSpec
from llmkube.api.presets import PRESETS
from llmkube.api.runconfig import GptConfig, JobIdentity, ServeRunConfig, StorageConfig
from llmkube.runtime.artifact import save_artifact
from llmkube.runtime.models import CausalLM, build_model
from llmkube.runtime.serving.engine import Engine, GenerationRequest
from llmkube.runtime.tokenizer import END_OF_TEXT, train_bpe
from llmkube.storage import open_store
from llmkube.testing.serving import ServeProcess

CONCURRENCY = (1, 4, 16)
NAME = "bench"


@dataclass
class Run:
    tokens: int = 0
    seconds: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    def row(self, label: str) -> str:
        def ms(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

        rate = f"{self.tokens_per_second:10,.0f} tok/s"
        ttft = f"TTFT p50 {ms(self.ttft, 0.5):7.1f} p99 {ms(self.ttft, 0.99):7.1f} ms"
        itl = f"ITL p50 {ms(self.itl, 0.5):6.2f} p99 {ms(self.itl, 0.99):6.2f} ms"
        return f"{label:<28} {rate}   {ttft}   {itl}"


async def drive(
    concurrency: int, requests: int, one: Callable[[int], Awaitable[tuple[int, list[float]]]]
) -> Run:
    """`requests` requests from `concurrency` clients; `one(i)` returns (tokens, event times)."""
    run = Run()
    queue = list(range(requests))

    async def client() -> None:
        while queue:
            index = queue.pop()
            began = time.perf_counter()
            tokens, times = await one(index)
            run.tokens += tokens
            run.ttft.append(times[0] - began)
            run.itl.extend(later - earlier for earlier, later in itertools.pairwise(times))

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - began
    return run


def engine_runs(
    engine: Engine,
    prompts: list[list[int]],
    max_tokens: int,
    requests: int,
    levels: tuple[int, ...] = CONCURRENCY,
) -> dict[int, Run]:
    async def one(index: int) -> tuple[int, list[float]]:
        request = GenerationRequest(prompt=prompts[index % len(prompts)], max_tokens=max_tokens)
        times, tokens = [], 0
        async for event in engine.generate(request):
            times.append(time.perf_counter())
            tokens = event.completion_tokens
        return tokens, times

    return {c: asyncio.run(drive(c, max(requests, 2 * c), one)) for c in levels}


def http_runs(
    url: str,
    texts: list[str],
    max_tokens: int,
    requests: int,
    levels: tuple[int, ...] = CONCURRENCY,
) -> dict[int, Run]:
    async def all_levels() -> dict[int, Run]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:

            async def one(index: int) -> tuple[int, list[float]]:
                body = {
                    "model": NAME,
                    "prompt": texts[index % len(texts)],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                }
                times, tokens = [], 0
                async with http.stream("POST", "/v1/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        if not line.startswith("data: {"):
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        elif chunk["choices"][0]["text"]:
                            times.append(time.perf_counter())
                return tokens, times

            await drive(1, 2, one)  # warm-up
            return {c: await drive(c, max(requests, 2 * c), one) for c in levels}

    return asyncio.run(all_levels())


def preset_model(preset: str, vocab_size: int) -> tuple[GptConfig, CausalLM]:
    """The preset's GPT, randomly initialised with a fixed seed, in eval mode."""
    dims = PRESETS[preset]
    config = GptConfig(
        n_layer=dims.n_layer,
        n_head=dims.n_head,
        d_model=dims.d_model,
        context_length=dims.context_length,
        dropout=0.0,
        vocab_size=vocab_size,
    )
    torch.manual_seed(0)
    return config, build_model(config).eval()


@torch.inference_mode()
def ideal_decode(model: CausalLM, prompt_length: int, steps: int, batch: int = 16) -> float:
    """Tokens/s of the bare decode step at a static batch with a filled KV cache."""
    cache = model.new_cache(batch)
    model(torch.randint(0, 200, (batch, prompt_length)), cache)
    token = torch.zeros(batch, 1, dtype=torch.long)
    for _ in range(3):  # warm-up, then rewind
        model(token, cache)
    cache.length = prompt_length
    began = time.perf_counter()
    for _ in range(steps):
        token = model(token, cache)[:, -1].argmax(-1, keepdim=True)
    return batch * steps / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--stream-interval",
        type=int,
        default=1,
        help="also run (c) with this serving.streamInterval (tokens per streamed chunk)",
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="alternating rounds of (b)@16 beside idle Ray and (c)@16 at interval 1",
    )
    parser.add_argument(
        "--via-proxy",
        action="store_true",
        help="also run (c) through Serve's proxy, as on a cluster",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    text = list(pydoc_data.topics.topics.values())
    tokenizer = train_bpe(text, args.vocab_size)
    config, model = preset_model(args.preset, tokenizer.get_vocab_size())
    prompts = [tokenizer.encode(t).ids[: args.prompt_tokens] for t in text[:16]]
    texts = [tokenizer.decode(p) for p in prompts]
    prompts = [tokenizer.encode(t).ids for t in texts]  # what the HTTP path will see
    end_of_text = tokenizer.token_to_id(END_OF_TEXT)
    stop = [end_of_text] if end_of_text is not None else []
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"model {args.preset}: {parameters:,} parameters, vocabulary {config.vocab_size}, "
        f"prompts of ~{args.prompt_tokens} tokens, {args.max_tokens} new tokens, "
        f"{args.threads} threads\n"
    )

    ideal = ideal_decode(model, args.prompt_tokens, args.max_tokens)
    print(f"(d) bare decode, static batch 16: {ideal:10,.0f} tok/s\n")

    results: dict[str, dict[int, Run]] = {}
    engines = {}
    for label, batch in (("(a) engine, no batching", 1), ("(b) engine, batching", 16)):
        engines[label] = Engine(
            model,
            tokenizer,
            max_batch_size=batch,
            max_concurrent_requests=1024,
            stop_token_ids=stop,
        )
        results[label] = engine_runs(engines[label], prompts, args.max_tokens, args.requests)
    batching = engines.pop("(b) engine, batching")
    engines.pop("(a) engine, no batching").close()

    intervals = sorted({1, args.stream_interval})
    variants = [(f"(c) HTTP, interval {n}", n, False) for n in intervals]
    if args.via_proxy:
        variants += [(f"(c) via proxy, interval {n}", n, True) for n in intervals]
    # (b)@16 beside idle Ray and (c)@16, alternating, so that drift on a noisy machine hits both.
    pairs: list[tuple[Run, Run]] = []
    root = Path(tempfile.mkdtemp(prefix="llmkube-bench-"))
    try:
        uri = f"file://{root}/model"
        save_artifact(
            open_store(uri),
            uri,
            model=model,
            config=config,
            tokenizer=tokenizer,
            evaluation={},
            card="",
        )
        for label, interval, via_proxy in variants:
            serve_config = ServeRunConfig(
                deployment=JobIdentity(name=NAME),
                model_uri=uri,
                replicas=1,
                gpus_per_replica=0,
                cpus_per_replica=args.threads,
                serving=ServingSpec(
                    max_batch_size=16,
                    max_concurrent_requests=1024,
                    max_tokens=args.max_tokens,
                    stream_interval=interval,
                ),
                storage=StorageConfig(),
            )
            workdir = root / f"serve-{len(results)}"
            with ServeProcess(serve_config, workdir, via_proxy=via_proxy) as serve:
                serve.wait_ready()
                results[label] = http_runs(serve.url, texts, args.max_tokens, args.requests)
                for _ in range(max(1, args.pairs) if interval == 1 and not via_proxy else 0):
                    beside = engine_runs(batching, prompts, args.max_tokens, 32, levels=(16,))
                    served = http_runs(serve.url, texts, args.max_tokens, 32, levels=(16,))
                    pairs.append((beside[16], served[16]))
    finally:
        batching.close()
        shutil.rmtree(root, ignore_errors=True)
    beside_ray = pairs[0][0]

    for concurrency in CONCURRENCY:
        print(f"concurrency {concurrency}:")
        for label, runs in results.items():
            print("  " + runs[concurrency].row(label))
            if concurrency == 16 and label == "(b) engine, batching":
                print("  " + beside_ray.row("(b) beside idle Ray"))
    a, b, *http = results.values()
    print()
    print(f"(b)@16 / (d)          : {b[16].tokens_per_second / ideal:6.2f}   (goal >= 0.80)")
    for label, c in zip(list(results)[2:], http, strict=True):
        ttft = statistics.median(c[1].ttft) - statistics.median(b[1].ttft)
        print(f"{label}:")
        print(
            f"  (c)@16 / (b)@16       : {c[16].tokens_per_second / b[16].tokens_per_second:6.2f}"
            "   (goal >= 0.90)"
        )
        print(f"  (c)@1 - (b)@1 TTFT p50: {1000 * ttft:6.1f} ms (goal <= 10 ms)")
    print(
        f"(b)@16 beside idle Ray / (b)@16: "
        f"{beside_ray.tokens_per_second / b[16].tokens_per_second:6.2f}"
        "   (what Ray's own processes cost by being there)"
    )
    paired = [c.tokens_per_second / beside.tokens_per_second for beside, c in pairs]
    print(
        f"{list(results)[2]}, {len(pairs)} pairs alternating with (b) beside idle Ray:\n"
        f"  (c)@16 / (b)@16 beside idle Ray: median {statistics.median(paired):.2f}, "
        f"range {min(paired):.2f}-{max(paired):.2f}   (what the HTTP path costs beyond Ray)"
    )
    print(
        f"(b)@16 / (a)@16       : {b[16].tokens_per_second / a[16].tokens_per_second:6.2f}"
        "   (what batching buys)"
    )


if __name__ == "__main__":
    main()
