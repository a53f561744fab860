"""A replica's HTTP layer in-process: the request guard serve.py installs, the OpenAI service over
a real engine and a small random model, and the API keys. Starlette's test client drives them."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from llmkube.api.runconfig import GptConfig
from llmkube.runtime import serve
from llmkube.runtime.models import build_model
from llmkube.runtime.prompts import PlainPrompts
from llmkube.runtime.serving.api_keys import ApiKeys, NoApiKeysError, parse_keys
from llmkube.runtime.serving.engine import Engine
from llmkube.runtime.serving.guard import REQUEST_ID_HEADER, RequestGuard, limit_bodies
from llmkube.runtime.serving.observer import NullObserver
from llmkube.runtime.serving.openai_api import OpenAIService, ServiceOptions
from llmkube.runtime.serving.served_model import ServedModel
from llmkube.runtime.tokenizer import byte_tokenizer

CONFIG = GptConfig(n_layer=1, n_head=2, d_model=32, context_length=256, dropout=0.0, vocab_size=256)
MAX_BODY = 4096
KEY = "sk-current"


class FailsOnTheEngineThread(NullObserver):
    """Raises from inside the engine's loop, outside any prefill or decode step, once armed."""

    armed = False

    def queue_depth(self, waiting: int) -> None:
        if self.armed and threading.current_thread().name == "llmkube-engine":
            raise RuntimeError("the engine loop broke")


class Replica:
    def __init__(self, keys_file: Path, *, timeout: float = 60.0) -> None:
        torch.manual_seed(0)
        model = build_model(CONFIG).eval()
        tokenizer = byte_tokenizer()
        self.observer = FailsOnTheEngineThread()
        self.engine = Engine(
            model, tokenizer, max_batch_size=2, max_concurrent_requests=4, observer=self.observer
        )
        served = ServedModel(model, PlainPrompts(tokenizer), tokenizer, {"tiny": None})
        self.service = OpenAIService(
            self.engine,
            served,
            options=ServiceOptions(max_prompt_tokens=64, max_tokens=64, request_timeout=timeout),
            api_keys=ApiKeys.from_file(keys_file),
            metrics=None,
        )
        # The routes serve.py's LLMServer declares, on an app with the same guard.
        app = FastAPI()
        app.add_middleware(RequestGuard)
        limit_bodies(MAX_BODY)
        app.post("/v1/completions")(self.service.completions)
        app.post("/v1/chat/completions")(self.service.chat_completions)
        app.get("/healthz")(self.service.health)

        @app.get("/v1/broken")
        def broken(request: Request) -> Response:
            raise RuntimeError("internal detail /srv/secret.py line 12")

        self.client = TestClient(app, raise_server_exceptions=False)

    def complete(self, body: object, key: str = KEY) -> Any:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/v1/completions",
            content=content,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"  {KEY}\n")
    return path


@pytest.fixture
def replica(keys_file: Path) -> Iterator[Replica]:
    running = Replica(keys_file)
    yield running
    running.engine.close()


def test_serve_installs_the_guard_on_its_app() -> None:
    installed: list[object] = [middleware.cls for middleware in serve.api.user_middleware]
    assert RequestGuard in installed


def test_an_answer_carries_a_request_id_and_keeps_the_clients(replica: Replica) -> None:
    answer = replica.complete({"model": "tiny", "prompt": "ab", "max_tokens": 2})
    assert answer.status_code == 200, answer.text
    assert answer.headers[REQUEST_ID_HEADER].startswith("req-")
    mine = replica.client.get("/healthz", headers={REQUEST_ID_HEADER: "trace-42"})
    assert mine.headers[REQUEST_ID_HEADER] == "trace-42"


def test_a_body_over_the_limit_is_413_before_it_is_read(replica: Replica) -> None:
    big = json.dumps({"model": "tiny", "prompt": "x" * (MAX_BODY * 2)}).encode()
    declared = replica.complete(big)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the guard counts as it reads
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    streamed = replica.client.post(
        "/v1/completions", content=chunks(), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert streamed.status_code == 413
    assert "maxRequestBytes" in streamed.json()["error"]["message"]


def test_an_unexpected_error_is_an_openai_500_with_the_request_id_and_no_internals(
    replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    answer = replica.client.get("/v1/broken")
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["type"] == "server_error"
    rid = answer.headers[REQUEST_ID_HEADER]
    assert rid in error["message"]
    assert "secret.py" not in answer.text
    assert "Traceback" not in answer.text
    assert rid in caplog.text  # the replica's log has it all, under the id
    assert "secret.py" in caplog.text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"[" * 2000 + b"]" * 2000, None),  # nested past Python's recursion limit
        ({"model": "tiny", "prompt": "x", "seed": 2**64}, "seed"),
        ({"model": "tiny", "prompt": "x", "seed": -(2**63) - 1}, "seed"),
    ],
)
def test_pathological_bodies_are_400(replica: Replica, body: object, param: str | None) -> None:
    answer = replica.complete(body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_prompt_far_over_the_limit_is_refused_without_tokenizing_it(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tokenizing(*_: object) -> list[int]:
        raise AssertionError("tokenized a prompt that was too long to serve anyway")

    monkeypatch.setattr(PlainPrompts, "encode", no_tokenizing)
    answer = replica.complete({"model": "tiny", "prompt": "y" * 3000})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert "3000 characters" in error["message"]


def test_several_keys_work_with_whitespace_around_them_and_a_rotation_needs_no_restart(
    replica: Replica, keys_file: Path
) -> None:
    body = {"model": "tiny", "prompt": "a", "max_tokens": 1}
    keys_file.write_text(f"{KEY}\n  sk-next \n")
    assert replica.complete(body, key="sk-next").status_code == 200
    assert replica.complete(body, key=KEY).status_code == 200
    keys_file.write_text("sk-next\n")  # the old key retired
    assert replica.complete(body, key=KEY).status_code == 401
    assert replica.complete(body, key="sk-next").status_code == 200
    keys_file.write_text("")  # caught mid-update: the keys before it still hold
    assert replica.complete(body, key="sk-next").status_code == 200


def test_no_keys_at_all_refuses_to_start(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.write_text(" \n")
    with pytest.raises(NoApiKeysError, match="holds no API key"):
        ApiKeys.from_file(empty)
    assert parse_keys("a, b\nc\t d") == {"a", "b", "c", "d"}


def test_a_request_past_its_deadline_is_stopped_and_answered_504(keys_file: Path) -> None:
    replica = Replica(keys_file, timeout=0.3)
    try:
        # Nothing is generated while the engine is held up (here: by a forward pass that
        # never ends in time).
        original = replica.engine.model.forward

        def slow(*args: Any, **kwargs: Any) -> torch.Tensor:
            time.sleep(0.2)
            return original(*args, **kwargs)

        replica.engine.model.forward = slow  # type: ignore[method-assign]
        body = {"model": "tiny", "prompt": "a", "max_tokens": 64}
        answer = replica.complete(body)
        assert answer.status_code == 504
        assert answer.json()["error"]["code"] == "timeout"
        with replica.client.stream(
            "POST",
            "/v1/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as streamed:
            events = [line for line in streamed.iter_lines() if line.startswith("data: ")]
        assert json.loads(events[-1][len("data: ") :])["error"]["code"] == "timeout"
        deadline = time.monotonic() + 10
        while replica.engine.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert replica.engine.running == 0  # the abandoned requests freed their slots
    finally:
        replica.engine.close()


def test_health_fails_once_the_engine_thread_dies(replica: Replica) -> None:
    assert replica.client.get("/healthz").status_code == 200
    replica.observer.armed = True
    answer = replica.complete({"model": "tiny", "prompt": "a", "max_tokens": 4})
    assert answer.status_code in (500, 503), answer.text  # the request it died with
    health = replica.client.get("/healthz")
    assert health.status_code == 503
    assert "the engine loop broke" in health.json()["error"]
    after = replica.complete({"model": "tiny", "prompt": "a", "max_tokens": 4})
    assert after.status_code == 503
    assert "stopped" in after.json()["error"]["message"]
