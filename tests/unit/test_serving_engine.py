"""The continuous-batching engine against a small random model, in-process."""

import asyncio
from collections.abc import Iterator

import pytest
import torch

from llmkube.api.runconfig import GptConfig
from llmkube.runtime.models import build_model
from llmkube.runtime.sampling import SamplingParams, generate
from llmkube.runtime.serving.engine import (
    Engine,
    EngineOverloadedError,
    GenerationEvent,
    GenerationRequest,
)
from llmkube.runtime.serving.text import TextAssembler
from llmkube.runtime.tokenizer import byte_tokenizer, token_bytes

CONFIG = GptConfig(n_layer=2, n_head=2, d_model=32, context_length=48, dropout=0.0, vocab_size=256)


@pytest.fixture
def engine() -> Iterator[Engine]:
    torch.manual_seed(0)
    model = build_model(CONFIG)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(20)
    model.eval()
    running = Engine(model, byte_tokenizer(), max_batch_size=4, max_concurrent_requests=6)
    yield running
    running.close()


async def collect(engine: Engine, request: GenerationRequest) -> list[GenerationEvent]:
    return [event async for event in engine.generate(request)]


def text_of(events: list[GenerationEvent]) -> str:
    return "".join(event.text for event in events)


def test_batched_greedy_outputs_equal_each_request_alone(engine: Engine) -> None:
    prompts = [list(b"a"), list(b"hello there"), list(b"xyz" * 5), list(b"The quick brown")]
    lengths = [30, 5, 17, 33]
    alone = [generate(engine.model, p, n) for p, n in zip(prompts, lengths, strict=True)]

    async def together() -> list[list[GenerationEvent]]:
        requests = [
            GenerationRequest(prompt=p, max_tokens=n) for p, n in zip(prompts, lengths, strict=True)
        ]
        # More requests than slots: two join the batch as others finish.
        return await asyncio.gather(*(collect(engine, r) for r in requests + requests[:2]))

    results = asyncio.run(together())
    for events, ids, limit in zip(results, alone + alone[:2], lengths + lengths[:2], strict=True):
        assert [token for event in events for token in event.tokens] == ids
        assert events[-1].completion_tokens == limit
        assert events[-1].finish_reason == "length"


def test_seeded_sampling_is_reproducible_inside_a_batch(engine: Engine) -> None:
    sampled = GenerationRequest(
        prompt=list(b"seed"), max_tokens=20, params=SamplingParams(temperature=1.0), seed=42
    )
    noise = GenerationRequest(prompt=list(b"other"), max_tokens=20)

    async def run() -> tuple[list[int], list[int]]:
        alone = [t for e in await collect(engine, sampled) for t in e.tokens]
        batched, _ = await asyncio.gather(collect(engine, sampled), collect(engine, noise))
        return alone, [t for e in batched for t in e.tokens]

    alone, batched = asyncio.run(run())
    assert alone == batched
    assert len(alone) > 0


def test_stop_sequences_cut_the_text(engine: Engine) -> None:
    full = text_of(asyncio.run(collect(engine, GenerationRequest(list(b"hi"), max_tokens=30))))
    stop = full[5:7]
    events = asyncio.run(
        collect(engine, GenerationRequest(list(b"hi"), max_tokens=30, stop=[stop]))
    )
    assert text_of(events) == full[: full.index(stop)]
    assert events[-1].finish_reason == "stop"


def test_stream_interval_sends_fewer_larger_events_with_the_same_tokens(engine: Engine) -> None:
    prompt = list(b"interval")

    async def run(interval: int) -> list[GenerationEvent]:
        return await collect(
            engine, GenerationRequest(prompt, max_tokens=30, stream_interval=interval)
        )

    every = asyncio.run(run(1))
    grouped = asyncio.run(run(4))
    whole = asyncio.run(run(30))
    for events in (grouped, whole):
        assert [t for e in events for t in e.tokens] == [t for e in every for t in e.tokens]
        assert text_of(events) == text_of(every)
        assert events[-1].completion_tokens == 30
    assert len(every) > 20
    assert len(grouped) <= 30 // 4 + 3
    assert all(
        e.completion_tokens - grouped[0].completion_tokens in range(0, 30, 4) for e in grouped[1:-1]
    )
    assert len(whole) <= 3  # the first text, then the end
    assert grouped[0].completion_tokens <= 2  # the first text is never held back


def test_context_end_finishes_with_length(engine: Engine) -> None:
    events = asyncio.run(collect(engine, GenerationRequest(list(b"x" * 40), max_tokens=100)))
    assert events[-1].finish_reason == "length"
    assert events[-1].completion_tokens == 48 - 40 + 1


def test_overload_is_refused_and_cancelled_requests_free_their_slots(engine: Engine) -> None:
    async def run() -> None:
        long = GenerationRequest(list(b"long"), max_tokens=40)
        streams = [aiter(engine.submit(long)) for _ in range(6)]
        firsts = [await anext(stream) for stream in streams[:4]]
        assert all(isinstance(first, GenerationEvent) for first in firsts)
        with pytest.raises(EngineOverloadedError) as refused:
            engine.submit(long)
        assert refused.value.retry_after >= 1
        for stream in streams[:4]:
            await stream.aclose()  # type: ignore[attr-defined]
        # The two queued requests get the freed slots and finish.
        rest = [[e async for e in stream] for stream in streams[4:]]
        assert all(events[-1].finish_reason == "length" for events in rest)
        await asyncio.sleep(0.1)
        assert engine.running == 0
        assert engine.waiting == 0

    asyncio.run(run())


def test_text_assembler_holds_back_partial_characters_and_stop_prefixes() -> None:
    assembler = TextAssembler(token_bytes(byte_tokenizer()), stop=["END"])
    pieces = []
    for byte in "café EN".encode():
        assembler.add(byte)
        pieces.append(assembler.take())
    assert "".join(pieces) == "café "
    assert pieces[3] == ""  # the first byte of "é" alone is not sent
    assert assembler.add(ord("D"))
    assert assembler.flush() == ""
