"""The OpenAI-compatible endpoints of one replica, over the engine. Routes in
`llmkube.runtime.serve` hand each request here; everything that can go wrong with a request
ends as an `ApiError` in OpenAI's shape."""

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from llmkube.runtime.sampling import SamplingParams
from llmkube.runtime.serving.api_keys import ApiKeys
from llmkube.runtime.serving.engine import (
    Engine,
    EngineOverloadedError,
    EngineStoppedError,
    GenerationEvent,
    GenerationRequest,
    UnknownAdapterError,
)
from llmkube.runtime.serving.metrics import ServingMetrics
from llmkube.runtime.serving.protocol import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    invalid_body,
)
from llmkube.runtime.serving.served_model import ServedModel


@dataclass(frozen=True)
class ServiceOptions:
    max_prompt_tokens: int
    max_tokens: int
    stream_interval: int = 1
    request_timeout: float = 600.0
    """Seconds a request may take in all, queueing and generating."""


MAX_CHARACTERS_PER_TOKEN = 32
"""A prompt longer than max_prompt_tokens times this is refused without tokenizing it (no
tokenizer of ours packs more characters into one token in ordinary text): the tokenizer's time
grows with the text, and a request must not buy unbounded CPU before it is refused."""


@dataclass
class _Prepared:
    kind: str  # "completion" | "chat"
    model: str
    """The model id asked for (one the replica serves)."""
    body: SamplingFields
    prompt: list[int]
    generation: Any  # engine.Generation
    started: float


class OpenAIService:
    def __init__(
        self,
        engine: Engine,
        served: ServedModel,
        *,
        options: ServiceOptions,
        api_keys: ApiKeys | None,
        metrics: ServingMetrics | None,
    ) -> None:
        self.engine = engine
        self.served = served
        self.codec = served.codec
        self.options = options
        self.api_keys = api_keys
        self.metrics = metrics
        self.created = int(time.time())

    # --- plain endpoints ---------------------------------------------------------------------

    def models(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except ApiError as error:
            return error.response()
        cards = [
            {"id": name, "object": "model", "created": self.created, "owned_by": "llmkube"}
            for name in list(self.served.ids)
        ]
        return JSONResponse({"object": "list", "data": cards})

    def health(self) -> Response:
        """200 while the engine can generate; 503 once its thread has died."""
        engine = self.engine
        if not engine.alive:
            return JSONResponse(
                {"status": "failed", "error": f"the generation engine stopped: {engine.failure}"},
                status_code=503,
            )
        return JSONResponse(
            {
                "status": "ok",
                "running": engine.running,
                "waiting": engine.waiting,
                "generated_tokens": engine.generated_total,
                "models": list(self.served.ids),
            }
        )

    # --- generation --------------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def _generate(self, request: Request, kind: str) -> Response:
        started = time.monotonic()
        try:
            prepared = await self._prepare(request, kind, started)
        except ApiError as error:
            self._answered(error.status, started, error.model)
            return error.response()
        if prepared.body.stream:
            return StreamingResponse(
                self._stream(prepared),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await self._whole(prepared)

    async def _prepare(self, request: Request, kind: str, started: float) -> _Prepared:
        self._authorize(request)
        body = _parse(await request.body(), kind)
        ids = self.served.ids  # replaced whole when adapters change, never edited
        if body.model not in ids:
            raise self._unknown_model(body.model)
        try:
            prompt = await asyncio.to_thread(self._encode, body, kind)
            return self._submit(body, kind, prompt, ids[body.model], started)
        except ApiError as error:
            error.model = body.model
            raise

    def _encode(self, body: SamplingFields, kind: str) -> list[int]:
        """The prompt's tokens; on a worker thread, so that tokenizing a long prompt holds up
        no other request."""
        if isinstance(body, CompletionRequest):
            text = body.prompt_text()
        else:
            assert isinstance(body, ChatCompletionRequest)
            turns = [(message.role, message.text()) for message in body.messages]
            text = "".join(turn for _, turn in turns)
        limit = self.options.max_prompt_tokens
        if len(text) > limit * MAX_CHARACTERS_PER_TOKEN:
            raise self._prompt_too_long(kind, f"{len(text)} characters")
        if isinstance(body, CompletionRequest):
            return self.codec.encode(text)
        return self.codec.encode_chat(turns)

    def _prompt_too_long(self, kind: str, size: str) -> ApiError:
        return ApiError(
            400,
            f"This model's maximum prompt length is {self.options.max_prompt_tokens} tokens; "
            f"your prompt has {size}. Shorten the prompt.",
            param="prompt" if kind == "completion" else "messages",
            code="context_length_exceeded",
        )

    def _submit(
        self,
        body: SamplingFields,
        kind: str,
        prompt: list[int],
        adapter: str | None,
        started: float,
    ) -> _Prepared:
        if isinstance(body, CompletionRequest):
            stops, requested = body.stops(), body.max_tokens
        else:
            assert isinstance(body, ChatCompletionRequest)
            stops, requested = [*body.stops(), *self.codec.chat_stops], body.limit()
        if len(prompt) > self.options.max_prompt_tokens:
            raise self._prompt_too_long(kind, f"{len(prompt)} tokens")
        if requested is not None and requested > self.options.max_tokens:
            raise ApiError(
                400,
                f"max_tokens is {requested}, above this server's limit of "
                f"{self.options.max_tokens}; ask for fewer tokens",
                param="max_tokens",
                code="max_tokens_exceeded",
            )
        room = self.engine.context_length - len(prompt) + 1
        max_tokens = min(requested or self.options.max_tokens, max(room, 1))
        params = SamplingParams(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k)
        # A whole answer crosses threads only for its first text and its end; a stream gets
        # text at the configured interval.
        interval = self.options.stream_interval if body.stream else max_tokens
        try:
            generation = self.engine.submit(
                GenerationRequest(
                    prompt=prompt,
                    max_tokens=max_tokens,
                    params=params,
                    stop=stops,
                    seed=body.seed,
                    stream_interval=interval,
                    adapter=adapter,
                )
            )
        except UnknownAdapterError:
            raise self._unknown_model(body.model) from None
        except EngineStoppedError as error:
            raise ApiError(503, f"{error}; retry on another replica", kind="server_error") from None
        except EngineOverloadedError as error:
            raise ApiError(
                429,
                f"{error}; retry after {error.retry_after:.0f}s",
                kind="rate_limit_exceeded",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(max(1, round(error.retry_after)))},
            ) from None
        if self.metrics:
            self.metrics.started(len(prompt), body.model)
        return _Prepared(kind, body.model, body, prompt, generation, started)

    def _unknown_model(self, name: str) -> ApiError:
        served = ", ".join(f"`{model}`" for model in self.served.ids)
        return ApiError(
            404,
            f"The model `{name}` does not exist; this server serves {served} (see GET /v1/models)",
            param="model",
            code="model_not_found",
        )

    def _authorize(self, request: Request) -> None:
        if self.api_keys is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not self.api_keys.accepts(token):
            raise ApiError(
                401,
                "Incorrect or missing API key; send it as `Authorization: Bearer <key>`",
                code="invalid_api_key",
            )

    def _answered(self, status: int, started: float, model: str | None) -> None:
        if self.metrics:
            served = model if model in self.served.ids else None
            self.metrics.answered(status, time.monotonic() - started, served)

    def _usage(self, prepared: _Prepared, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": len(prepared.prompt),
            "completion_tokens": completion_tokens,
            "total_tokens": len(prepared.prompt) + completion_tokens,
        }

    def _deadline(self, prepared: _Prepared) -> float:
        """The event-loop time at which the request is out of time."""
        remaining = prepared.started + self.options.request_timeout - time.monotonic()
        return asyncio.get_running_loop().time() + max(remaining, 0.0)

    def _timed_out(self) -> ApiError:
        return ApiError(
            504,
            f"the request did not finish within this server's limit of "
            f"{self.options.request_timeout:.0f}s; ask for fewer tokens or retry when it is "
            "less busy",
            kind="server_error",
            code="timeout",
        )

    async def _whole(self, prepared: _Prepared) -> Response:
        pieces: list[str] = []
        last: GenerationEvent | None = None
        try:
            async with asyncio.timeout_at(self._deadline(prepared)):
                async for event in prepared.generation:
                    pieces.append(event.text)
                    last = event
        except TimeoutError:
            prepared.generation.cancel()
            error = self._timed_out()
            self._answered(error.status, prepared.started, prepared.model)
            return error.response()
        finally:
            if self.metrics:
                self.metrics.finished()
        assert last is not None
        text, finish = "".join(pieces), last.finish_reason
        if prepared.kind == "completion":
            choice: dict[str, Any] = {
                "index": 0,
                "text": text,
                "finish_reason": finish,
                "logprobs": None,
            }
            body = {"id": _id("cmpl"), "object": "text_completion"}
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
            body = {"id": _id("chatcmpl"), "object": "chat.completion"}
        self._answered(200, prepared.started, prepared.model)
        return JSONResponse(
            {
                **body,
                "created": int(time.time()),
                "model": prepared.model,
                "choices": [choice],
                "usage": self._usage(prepared, last.completion_tokens),
            }
        )

    async def _stream(self, prepared: _Prepared) -> AsyncIterator[str]:
        chat = prepared.kind == "chat"
        head = {
            "id": _id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": prepared.model,
        }
        completion_tokens = 0
        status = 200
        deadline = self._deadline(prepared)
        try:
            if chat:
                role = {"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}
                yield _sse({**head, "choices": [role]})
            async for event in _until(prepared.generation, deadline):
                if event is None:
                    # Headers are sent: the error goes in the stream, as OpenAI's do.
                    prepared.generation.cancel()
                    timed_out = self._timed_out()
                    status = timed_out.status
                    yield _sse(timed_out.body())
                    return
                completion_tokens = event.completion_tokens
                if not event.text and event.finish_reason is None:
                    continue
                if chat:
                    delta = {"content": event.text} if event.text else {}
                    choice = {"index": 0, "delta": delta, "finish_reason": event.finish_reason}
                else:
                    choice = {
                        "index": 0,
                        "text": event.text,
                        "finish_reason": event.finish_reason,
                        "logprobs": None,
                    }
                yield _sse({**head, "choices": [choice]})
            if prepared.body.include_usage:
                usage = self._usage(prepared, completion_tokens)
                yield _sse({**head, "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"
        finally:
            if self.metrics:
                self.metrics.finished()
            self._answered(status, prepared.started, prepared.model)


async def _until(generation: Any, deadline: float) -> AsyncIterator[GenerationEvent | None]:
    """The generation's events, then None if the deadline passes before its end."""
    events = aiter(generation)
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                event = await anext(events)
        except StopAsyncIteration:
            return
        except TimeoutError:
            yield None
            return
        yield event


def _parse(raw: bytes, kind: str) -> SamplingFields:
    """The request body as a completion or chat request; any problem is a 400."""
    schema: type[BaseModel] = CompletionRequest if kind == "completion" else ChatCompletionRequest
    try:
        payload = json.loads(raw)
        if not isinstance(payload, dict):
            raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
        body = schema.model_validate(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(
            400, "the request body is not valid JSON; send a JSON object", code="invalid_json"
        ) from None
    except RecursionError:
        raise ApiError(
            400, "the request body is nested too deeply to be a request", code="invalid_json"
        ) from None
    except ValidationError as error:
        raise invalid_body(error) from None
    assert isinstance(body, SamplingFields)
    return body


def _id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
