"""The generation engine of one replica: KV-cache decoding with continuous batching.

One thread owns the model. Between two decode steps it admits waiting requests (prefilling
each into a free slot of one preallocated KV cache) and drops finished and cancelled ones; each
decode step then advances every running sequence by one token in a single forward pass, rows
at their own positions. Callers on an asyncio loop submit requests and read events as they come.
"""

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from tokenizers import Tokenizer

from llmkube.runtime.models import CausalLM
from llmkube.runtime.sampling import SamplingParams, choose_next
from llmkube.runtime.serving.observer import EngineObserver, NullObserver
from llmkube.runtime.serving.text import TextAssembler
from llmkube.runtime.tokenizer import token_bytes

FinishReason = str  # "stop" | "length"
log = logging.getLogger(__name__)


class UnknownAdapterError(Exception):
    """The request names an adapter that is being removed."""


class EngineStoppedError(Exception):
    """The engine thread has died; this replica cannot generate any more."""


class EngineOverloadedError(Exception):
    """The replica already holds its maximum of running plus queued requests."""

    def __init__(self, limit: int, retry_after: float) -> None:
        super().__init__(f"the server is at its limit of {limit} concurrent requests")
        self.retry_after = retry_after


@dataclass(frozen=True)
class GenerationRequest:
    prompt: list[int]
    max_tokens: int
    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    stop: Sequence[str] = ()
    seed: int | None = None
    stream_interval: int = 1
    """Deliver an event at most every this many tokens; the first token and the end always go
    at once. Fewer, larger events cost less per token on every hop to the client."""
    adapter: str | None = None
    """The LoRA adapter to generate with (None: the model itself)."""


@dataclass(frozen=True)
class GenerationEvent:
    text: str
    """Text produced since the previous event (may be empty)."""
    completion_tokens: int
    finish_reason: FinishReason | None = None
    tokens: tuple[int, ...] = ()
    """The tokens this event is for (a stop token is not reported)."""

    def then(self, following: "GenerationEvent") -> "GenerationEvent":
        """This event and the one after it, as one."""
        return GenerationEvent(
            self.text + following.text,
            following.completion_tokens,
            following.finish_reason,
            self.tokens + following.tokens,
        )


@dataclass
class _AdapterChange:
    name: str
    action: Callable[[], None]
    removing: bool
    done: "Future[None]"


@dataclass
class _Sequence:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: "asyncio.Queue[GenerationEvent | BaseException]"
    assembler: TextAssembler
    generator: torch.Generator
    submitted: float
    slot: int = -1
    length: int = 0
    last_token: int = 0
    generated: list[int] = field(default_factory=list)
    last_token_time: float = 0.0
    held: GenerationEvent | None = None
    """Tokens not delivered yet (see GenerationRequest.stream_interval)."""
    delivered: int = 0
    """Tokens generated when text last went out (0: no text yet)."""
    cancelled: bool = False
    finished: bool = False


class Generation:
    """The events of one submitted request, the last with a finish_reason. Leaving the loop early
    (a client that went away) cancels the request; its slot is freed at the next step."""

    def __init__(self, sequence: _Sequence) -> None:
        self._sequence = sequence

    def cancel(self) -> None:
        self._sequence.cancelled = True

    async def __aiter__(self) -> AsyncIterator[GenerationEvent]:
        """Events as they come; those that piled up while the reader was busy arrive merged
        into one (their texts joined), so a slow reader costs one wake-up, not one per token."""
        events = self._sequence.events
        try:
            while True:
                event = await events.get()
                while not isinstance(event, BaseException) and event.finish_reason is None:
                    try:
                        following = events.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if isinstance(following, BaseException):
                        event = following
                        break
                    event = event.then(following)
                if isinstance(event, BaseException):
                    raise event
                yield event
                if event.finish_reason is not None:
                    return
        finally:
            self.cancel()


class Engine:
    def __init__(
        self,
        model: CausalLM,
        tokenizer: Tokenizer,
        *,
        max_batch_size: int,
        max_concurrent_requests: int,
        stop_token_ids: Sequence[int] = (),
        device: torch.device | str = "cpu",
        observer: EngineObserver | None = None,
        context_length: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_concurrent = max_concurrent_requests
        self.stop_token_ids = set(stop_token_ids)
        self.device = torch.device(device)
        self.observer = observer or NullObserver()
        self._token_bytes = token_bytes(tokenizer)
        self.context_length = min(context_length or model.context_length, model.context_length)
        """Prompt plus generated tokens of one request, at most (a KV-cache slot's size)."""
        self.cache = model.new_cache(max_batch_size, self.context_length, device=self.device)
        # Running sequence i always sits in cache slot i (see _drop_done), so a decode step
        # reads one contiguous view of the cache instead of gathering rows.
        self._outbox: list[tuple[_Sequence, GenerationEvent | BaseException]] = []
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        self._admitting: list[_Sequence] = []
        self._wakeup = threading.Condition()
        self._adapter_changes: list[_AdapterChange] = []
        self._retired: set[str] = set()
        self._stopped = False
        self._seeds = itertools.count(int(time.time_ns() % 2**31))
        self._step_seconds = 0.05
        self.generated_total = 0
        """Tokens generated since start (what /healthz reports)."""
        self.failure: BaseException | None = None
        """What killed the engine thread, if something did (health checks then fail)."""
        self._thread = threading.Thread(target=self._loop, name="llmkube-engine", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.failure is None and self._thread.is_alive()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._wakeup:
            self._stopped = True
            self._wakeup.notify()
        self._thread.join(timeout=10)

    def submit(self, request: GenerationRequest) -> "Generation":
        """Queue a request (call from the event loop that will read it). Raises
        EngineOverloadedError at once when the replica is full."""
        seed = request.seed if request.seed is not None else next(self._seeds)
        sequence = _Sequence(
            request=request,
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
            assembler=TextAssembler(self._token_bytes, request.stop),
            generator=torch.Generator(device=self.device).manual_seed(seed),
            submitted=time.monotonic(),
        )
        with self._wakeup:
            if not self.alive:
                raise EngineStoppedError(f"the generation engine has stopped: {self.failure}")
            if request.adapter in self._retired:
                raise UnknownAdapterError(request.adapter)
            if len(self._waiting) + len(self._running) >= self.max_concurrent:
                queued_steps = len(self._waiting) / self.max_batch_size + 1
                raise EngineOverloadedError(
                    self.max_concurrent,
                    retry_after=max(1.0, queued_steps * request.max_tokens * self._step_seconds),
                )
            self._waiting.append(sequence)
            self.observer.queue_depth(len(self._waiting))
            self._wakeup.notify()
        return Generation(sequence)

    def change_adapter(
        self, name: str, action: Callable[[], None], *, removing: bool
    ) -> "Future[None]":
        """Run `action` (which adds, replaces or removes adapter `name` in the model) on the
        engine thread between two steps, once no queued or running request uses `name`; from
        now until then, new requests for it are refused when `removing`."""
        change = _AdapterChange(name, action, removing, Future())
        with self._wakeup:
            if removing:
                self._retired.add(name)
            self._adapter_changes.append(change)
            self._wakeup.notify()
        return change.done

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """`submit` and iterate in one call."""
        async for event in self.submit(request):
            yield event

    # --- the engine thread -------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                self._serve_forever()
        except BaseException as error:
            # Errors in a forward pass fail only its requests; anything else leaves the engine
            # unable to go on: every request still here is answered with it, and health checks
            # fail so that the replica is replaced.
            log.exception("the generation engine stopped")
            with self._wakeup:
                self.failure = error
                for sequence in [*self._waiting, *self._admitting, *self._running]:
                    self._fail(sequence, EngineStoppedError(f"the engine stopped: {error}"))
                self._waiting.clear()
            self._deliver()

    def _serve_forever(self) -> None:
        while True:
            with self._wakeup:
                while (
                    not self._stopped
                    and not self._waiting
                    and not self._running
                    and not self._adapter_changes
                ):
                    self._wakeup.wait()
                if self._stopped:
                    return
                due = self._due_adapter_changes()
            for change in due:
                self._change(change)
            with self._wakeup:
                # Named on self: if the loop dies before they run, they are answered too.
                admitted: list[_Sequence] = []
                self._admitting = admitted
                free = self.max_batch_size - len(self._running)
                while self._waiting and len(admitted) < free:
                    sequence = self._waiting.popleft()
                    if not sequence.cancelled:
                        admitted.append(sequence)
                self.observer.queue_depth(len(self._waiting))
            if admitted:
                try:
                    self._prefill(admitted)
                except Exception as error:
                    for sequence in admitted:
                        self._fail(sequence, error)
                self._deliver()  # first tokens now, not after the next decode step
            self._drop_done()
            if self._running:
                began = time.monotonic()
                try:
                    self._decode_step()
                except Exception as error:
                    for sequence in list(self._running):
                        self._fail(sequence, error)
                self._step_seconds = 0.9 * self._step_seconds + 0.1 * (time.monotonic() - began)
                self._drop_done()
            self._deliver()

    def _due_adapter_changes(self) -> "list[_AdapterChange]":
        """Changes whose adapter no request holds any more (call with the lock held)."""
        used = {s.request.adapter for s in (*self._waiting, *self._running) if not s.cancelled}
        due = [c for c in self._adapter_changes if c.name not in used]
        self._adapter_changes = [c for c in self._adapter_changes if c.name in used]
        return due

    def _change(self, change: "_AdapterChange") -> None:
        try:
            change.action()
        except Exception as error:
            change.done.set_exception(error)
        else:
            change.done.set_result(None)
        if not change.removing:
            with self._wakeup:
                self._retired.discard(change.name)

    def _prefill(self, admitted: list[_Sequence]) -> None:
        """All newly admitted prompts in one forward pass, right-padded, each into the next
        free slot; then each gets its first token."""
        device = self.device
        first = len(self._running)
        lengths = [len(sequence.request.prompt) for sequence in admitted]
        for offset, sequence in enumerate(admitted):
            sequence.slot = first + offset
            sequence.length = lengths[offset]
            self._running.append(sequence)
            self.observer.admitted(time.monotonic() - sequence.submitted)
        self.cache.first_row = first
        logits = self.model(
            **prefill_inputs([s.request.prompt for s in admitted], device),
            cache=self.cache,
            **self._adapters(admitted),
        )[:, -1]
        for sequence, token in zip(admitted, self._choose(logits, admitted), strict=True):
            self._accept(sequence, token)

    def _decode_step(self) -> None:
        running = self._running
        self.observer.batch_size(len(running))
        self.cache.first_row = 0
        logits = self.model(
            **decode_inputs(
                [s.last_token for s in running], [s.length for s in running], self.device
            ),
            cache=self.cache,
            **self._adapters(running),
        )[:, -1]
        for sequence in running:
            sequence.length += 1
        for sequence, token in zip(list(running), self._choose(logits, running), strict=True):
            self._accept(sequence, token)

    @staticmethod
    def _adapters(sequences: Sequence[_Sequence]) -> dict[str, Any]:
        """The rows' adapters, when any row names one (a model without adapters never sees the
        argument)."""
        names = [s.request.adapter for s in sequences]
        return {"adapters": names} if any(names) else {}

    def _choose(self, logits: torch.Tensor, sequences: Sequence[_Sequence]) -> list[int]:
        greedy = logits.argmax(dim=-1).tolist()
        chosen = []
        for row, sequence in enumerate(sequences):
            params = sequence.request.params
            if params.temperature <= 0:
                chosen.append(int(greedy[row]))
            else:
                token = choose_next(logits[row : row + 1], params, sequence.generator)
                chosen.append(int(token.item()))
        return chosen

    def _accept(self, sequence: _Sequence, token: int) -> None:
        now = time.monotonic()
        adapter = sequence.request.adapter
        if sequence.generated:
            self.observer.inter_token(now - sequence.last_token_time, adapter)
        else:
            self.observer.first_token(now - sequence.submitted, adapter)
        sequence.last_token_time = now
        sequence.last_token = token
        finish: FinishReason | None = None
        kept: tuple[int, ...] = ()
        if token in self.stop_token_ids:
            finish = "stop"
        else:
            kept = (token,)
            sequence.generated.append(token)
            self.generated_total += 1
            self.observer.generated(1, adapter)
            if sequence.assembler.add(token):
                finish = "stop"
            elif (
                len(sequence.generated) >= sequence.request.max_tokens
                or sequence.length + 1 > self.context_length
            ):
                finish = "length"
        text = sequence.assembler.flush() if finish else sequence.assembler.take()
        self._send_or_hold(sequence, GenerationEvent(text, len(sequence.generated), finish, kept))
        if finish:
            sequence.finished = True

    def _send_or_hold(self, sequence: _Sequence, event: GenerationEvent) -> None:
        """Send now, or hold until the request's stream interval is due."""
        if sequence.held is not None:
            event = sequence.held.then(event)
        count = event.completion_tokens
        due = count - sequence.delivered >= sequence.request.stream_interval
        if event.finish_reason or due or sequence.delivered == 0:
            sequence.held = None
            if event.text or sequence.delivered:  # the first text goes out as soon as it exists
                sequence.delivered = count
            self._send(sequence, event)
        else:
            sequence.held = event

    def _send(self, sequence: _Sequence, event: GenerationEvent | BaseException) -> None:
        self._outbox.append((sequence, event))

    def _deliver(self) -> None:
        """Hand this step's events to their event loops: one wake-up per loop, not per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Sequence, object]]] = {}
        for sequence, event in self._outbox:
            by_loop.setdefault(sequence.loop, []).append((sequence, event))
        self._outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # that event loop is gone: nobody is listening any more
                for sequence, _ in items:
                    sequence.cancelled = True

    def _fail(self, sequence: _Sequence, error: BaseException) -> None:
        sequence.finished = True
        self._send(sequence, error)

    def _drop_done(self) -> None:
        """Free the slots of finished and cancelled sequences, moving the last running sequence
        into each hole so that running sequence i stays in slot i."""
        running = self._running
        for index in range(len(running) - 1, -1, -1):
            sequence = running[index]
            if sequence.finished or sequence.cancelled:
                last = running.pop()
                if last is not sequence:
                    self._move(last, index)
                    running[index] = last

    def _move(self, sequence: _Sequence, slot: int) -> None:
        filled = sequence.length
        for store in (self.cache.keys, self.cache.values):
            for layer in store:
                layer[slot, :, :filled] = layer[sequence.slot, :, :filled]
        sequence.slot = slot


def prefill_inputs(prompts: Sequence[Sequence[int]], device: torch.device) -> dict[str, Any]:
    """A prefill's forward arguments: the prompts right-padded into one batch, each row at
    positions 0.. of its slot, logits only at each prompt's last token."""
    lengths = [len(prompt) for prompt in prompts]
    steps = max(lengths)
    tokens = torch.zeros(len(prompts), steps, dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        tokens[row, : lengths[row]] = torch.tensor(prompt)
    valid = (
        torch.arange(steps, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    )
    causal = torch.ones(steps, steps, dtype=torch.bool, device=device).tril()
    # Padding keys are hidden; padding queries still see the real keys, so no row is empty.
    mask = causal[None] & valid[:, None, :]
    return {
        "tokens": tokens,
        "positions": torch.arange(steps, device=device)[None].expand(len(prompts), -1),
        "mask": mask[:, None],
        "logits_at": torch.tensor(lengths, device=device) - 1,
    }


def decode_inputs(
    last_tokens: Sequence[int], lengths: Sequence[int], device: torch.device
) -> dict[str, Any]:
    """A decode step's forward arguments: each row's last token at its own position (its
    length so far), attending to every filled position of its slot."""
    filled = torch.tensor(lengths, device=device)
    span = int(filled.max()) + 1
    mask = torch.arange(span, device=device)[None, :] <= filled[:, None]
    return {
        "tokens": torch.tensor([[token] for token in last_tokens], device=device),
        "positions": filled[:, None],
        "mask": mask[:, None, None, :],
    }


def _put_all(items: list[tuple[_Sequence, object]]) -> None:
    for sequence, event in items:
        sequence.events.put_nowait(event)  # type: ignore[arg-type]
