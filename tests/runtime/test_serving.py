"""The Ray Serve app for real: a model artifact in MinIO, Serve started locally by the serve
entrypoint, driven with the official openai client and raw HTTP, scraped by a real Prometheus."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from llmkube.api.deployment import ServingSpec
from llmkube.api.runconfig import JobIdentity, ServeRunConfig, StorageConfig
from llmkube.console.app import API_KEY_HEADER, create_app
from llmkube.console.csrf import CSRF_HEADER
from llmkube.console.local_source import LocalSource
from llmkube.console.serving_numbers import PrometheusNumbers
from llmkube.local.run_state import write_state
from llmkube.runtime.daemons import descendants, running_processes
from llmkube.storage import open_store
from llmkube.testing.minio import MinioServer
from llmkube.testing.models import publish_byte_model
from llmkube.testing.processes import free_port, stop_by_signal, wait_until
from llmkube.testing.prometheus import PrometheusServer
from llmkube.testing.serving import ServeProcess

API_KEY = "sk-test-llmkube"
NEXT_KEY = "sk-test-next"
MAX_REQUEST_BYTES = 64 * 1024
NAME = "pydoc"
MAX_CONCURRENT = 32
STREAM_INTERVAL = 3
SERVE = [sys.executable, "-m", "llmkube.runtime.serve"]


class Server:
    def __init__(self, serve: ServeProcess, prometheus: PrometheusServer) -> None:
        self.serve = serve
        self.prometheus = prometheus
        self.client = openai.OpenAI(base_url=f"{serve.url}/v1", api_key=API_KEY, max_retries=0)
        self.async_client = openai.AsyncOpenAI(
            base_url=f"{serve.url}/v1", api_key=API_KEY, max_retries=0, timeout=120
        )
        self.http = httpx.Client(base_url=serve.url, timeout=60)

    def post(self, path: str, body: object, key: str | None = API_KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.post(path, content=content, headers=headers)

    def health(self) -> dict[str, int]:
        loaded: dict[str, int] = self.http.get("/healthz").json()
        return loaded


@pytest.fixture(scope="module")
def server(minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    bucket = "serving-tests"
    minio.make_bucket(bucket)
    storage = StorageConfig(endpoint=minio.endpoint, insecure=True)
    model_uri = f"s3://{bucket}/pydoc/model"
    publish_byte_model(open_store(model_uri, storage, environ=minio.env), model_uri)
    config = ServeRunConfig(
        deployment=JobIdentity(name=NAME, namespace="test"),
        model_uri=model_uri,
        replicas=1,
        gpus_per_replica=0,
        cpus_per_replica=1,
        serving=ServingSpec(
            max_batch_size=8,
            max_concurrent_requests=MAX_CONCURRENT,
            max_prompt_tokens=200,
            max_tokens=480,
            stream_interval=STREAM_INTERVAL,
            max_request_bytes=MAX_REQUEST_BYTES,
        ),
        api_key_env="LLMKUBE_API_KEY",
        storage=storage,
    )
    metrics_port = free_port()
    env = {
        **minio.env,
        # Two keys (a rotation under way), with the whitespace a Secret's file often has.
        "LLMKUBE_API_KEY": f" {API_KEY}\n{NEXT_KEY} \n",
        "LLMKUBE_RAY_METRICS_PORT": str(metrics_port),
        "RAY_metrics_report_interval_ms": "1000",
    }
    workdir = tmp_path_factory.mktemp("serve")
    with PrometheusServer.start([f"127.0.0.1:{metrics_port}"]) as prometheus:
        serve = ServeProcess(config, workdir, env)
        try:
            serve.wait_ready()
            yield Server(serve, prometheus)
        finally:
            # SIGTERM alone: Serve and the Ray cluster must go by themselves, with nobody
            # killing the session afterwards.
            code = stop_by_signal(serve, signal.SIGTERM)
        assert code == 0, f"serve did not shut down cleanly ({code}):\n{serve.log[-3000:]}"
        assert "stopping on SIGTERM" in serve.log


def test_models_and_health(server: Server) -> None:
    assert [model.id for model in server.client.models.list()] == [NAME]
    assert server.http.get("/readyz").status_code == 200
    assert server.health()["running"] == 0
    # One replica answers on the served port itself, not behind Serve's proxy.
    assert "Direct ingress enabled" in server.serve.log


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_rays_daemons_run_only_on_spare_cpu(server: Server) -> None:
    processes = running_processes()
    tree = {pid: processes[pid].command for pid in descendants(processes, server.serve.process.pid)}

    def policies(prefix: str) -> set[int]:
        pids = [pid for pid, command in tree.items() if Path(command).name.startswith(prefix)]
        assert pids, f"no {prefix} under the serve entrypoint: {sorted(tree.values())}"
        return {os.sched_getscheduler(int(t)) for p in pids for t in os.listdir(f"/proc/{p}/task")}

    for daemon in ("gcs_server", "ray::ServeController", "ray::DashboardAgent", "ray::ProxyActor"):
        assert policies(daemon) == {os.SCHED_IDLE}, daemon
    # The model's threads, and the raylet whose policy every new worker inherits.
    assert policies("ray::ServeReplica") == {os.SCHED_OTHER}
    assert policies("raylet") == {os.SCHED_OTHER}


def test_completion_with_usage(server: Server) -> None:
    prompt = "The assert statement"
    answer = server.client.completions.create(
        model=NAME, prompt=prompt, max_tokens=12, temperature=0
    )
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(prompt.encode())  # a byte-level model
    assert answer.usage.completion_tokens == 12
    assert answer.usage.total_tokens == len(prompt.encode()) + 12
    assert answer.choices[0].text.strip()


def test_streaming_equals_the_whole_answer(server: Server) -> None:
    whole = server.client.completions.create(
        model=NAME, prompt="for loops", max_tokens=30, temperature=0
    )
    chunks = list(
        server.client.completions.create(
            model=NAME,
            prompt="for loops",
            max_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].text for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].text
    # serving.streamInterval: the first token alone, then STREAM_INTERVAL tokens per chunk.
    assert len([c for c in chunks if c.choices]) <= 1 + -(-29 // STREAM_INTERVAL)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 30
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    raw = server.post(
        "/v1/completions",
        {"model": NAME, "prompt": "x", "max_tokens": 3, "stream": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: ") for event in events)


def test_chat_completion_and_stream(server: Server) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "system", "content": "You explain Python."},
        {"role": "user", "content": "What does the with statement do?"},
    ]
    whole = server.client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=20, temperature=0
    )
    assert whole.choices[0].message.role == "assistant"
    streamed = server.client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=20, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed)
    assert text == whole.choices[0].message.content
    assert "\nUser:" not in text


def test_stop_sequences(server: Server) -> None:
    full = server.client.completions.create(
        model=NAME, prompt="The if statement", max_tokens=40, temperature=0
    ).choices[0]
    stop = full.text[10:13]
    cut = server.client.completions.create(
        model=NAME, prompt="The if statement", max_tokens=40, temperature=0, stop=[stop]
    ).choices[0]
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"


def test_seeded_sampling_is_reproducible(server: Server) -> None:
    def sample(seed: int) -> str:
        return (
            server.client.completions.create(
                model=NAME,
                prompt="import",
                max_tokens=24,
                temperature=1.0,
                top_p=0.95,
                seed=seed,
                extra_body={"top_k": 40},
            )
            .choices[0]
            .text
        )

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


def test_concurrent_requests_match_each_alone(server: Server) -> None:
    prompts = ["class ", "The while statement", "x", "Lambda expressions are", "yield"]
    lengths = [60, 5, 33, 17, 48]

    def one(prompt: str, length: int) -> str:
        return (
            server.client.completions.create(
                model=NAME, prompt=prompt, max_tokens=length, temperature=0
            )
            .choices[0]
            .text
        )

    alone = [one(p, n) for p, n in zip(prompts, lengths, strict=True)]

    async def together() -> list[str]:
        async def ask(prompt: str, length: int) -> str:
            answer = await server.async_client.completions.create(
                model=NAME, prompt=prompt, max_tokens=length, temperature=0
            )
            return answer.choices[0].text

        jobs = [ask(p, n) for p, n in zip(prompts * 3, lengths * 3, strict=True)]
        return await asyncio.gather(*jobs)

    assert asyncio.run(together()) == alone * 3


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b'{"model": "pydoc", "prompt": ', 400, "invalid_json", None),
        ({"model": "pydoc", "prompt": "x" * 201}, 400, "context_length_exceeded", "prompt"),
        (
            {"model": "pydoc", "prompt": "x", "max_tokens": 481},
            400,
            "max_tokens_exceeded",
            "max_tokens",
        ),
        ({"model": "gpt-4", "prompt": "x"}, 404, "model_not_found", "model"),
        ({"model": "pydoc", "prompt": "x", "n": 2}, 400, None, "n"),
        ({"model": "pydoc", "prompt": "x", "temperature": 3}, 400, None, "temperature"),
        ({"model": "pydoc"}, 400, None, "prompt"),
    ],
)
def test_bad_requests_get_openai_errors(
    server: Server, body: object, status: int, code: str | None, param: str | None
) -> None:
    answer = server.post("/v1/completions", body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]


def test_api_key_is_required(server: Server) -> None:
    body = {"model": NAME, "prompt": "x", "max_tokens": 1}
    for key in (None, "sk-wrong"):
        answer = server.post("/v1/completions", body, key=key)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.serve.url}/v1", api_key="nope").models.list()
    assert server.http.get("/healthz").status_code == 200  # probes need no key
    for key in (API_KEY, NEXT_KEY):
        assert server.post("/v1/completions", body, key=key).status_code == 200


def test_the_request_guard_answers_through_ray_serve(server: Server) -> None:
    """The ASGI guard serve.py installs runs inside Ray Serve's ingress, too."""
    big = {"model": NAME, "prompt": "x" * MAX_REQUEST_BYTES}
    answer = server.post("/v1/completions", big)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"
    assert answer.headers["x-request-id"]
    nested = server.post("/v1/completions", b"[" * 2000 + b"]" * 2000)
    assert nested.status_code == 400
    assert nested.json()["error"]["code"] == "invalid_json"
    fine = server.post("/v1/completions", {"model": NAME, "prompt": "x", "max_tokens": 1})
    assert fine.headers["x-request-id"]


def test_overload_answers_429_and_the_server_survives(server: Server) -> None:
    # Long answers keep the batch full while the 200 requests are still arriving.
    body = {"model": NAME, "prompt": "The import system", "max_tokens": 480, "temperature": 0}
    headers = {"Authorization": f"Bearer {API_KEY}"}

    def one_user(_: int) -> httpx.Response:
        # Each user its own connection: 200 threads sharing one httpx pool race on its sockets.
        url = f"{server.serve.url}/v1/completions"
        return httpx.post(url, json=body, headers=headers, timeout=120)

    with ThreadPoolExecutor(200) as pool:
        answers = list(pool.map(one_user, range(200)))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 429}, statuses
    refused = [answer for answer in answers if answer.status_code == 429]
    assert refused, "200 concurrent requests against a limit of 32 must be refused in part"
    assert statuses.count(200) >= MAX_CONCURRENT
    assert int(refused[0].headers["retry-after"]) >= 1
    assert refused[0].json()["error"]["code"] == "rate_limit_exceeded"
    texts = {answer.json()["choices"][0]["text"] for answer in answers if answer.status_code == 200}
    assert len(texts) == 1  # every accepted greedy request got the same, whole answer
    wait_until(lambda: server.health()["running"] == 0, timeout=30, what="the batch to drain")
    ok = server.client.completions.create(model=NAME, prompt="x", max_tokens=2, temperature=0)
    assert ok.choices[0].finish_reason == "length"


def test_a_disconnected_stream_frees_its_slot(server: Server) -> None:
    before = server.health()["generated_tokens"]
    body = {"model": NAME, "prompt": "def", "max_tokens": 480, "temperature": 0, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with server.http.stream("POST", "/v1/completions", json=body, headers=headers) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")
    # The client went away after the first chunk; the engine drops the sequence.
    wait_until(lambda: server.health()["running"] == 0, timeout=30, what="the slot to be freed")
    generated = server.health()["generated_tokens"] - before
    assert generated < 400, f"{generated} tokens generated for a client that left at once"


def test_prometheus_sees_the_serving_metrics(server: Server) -> None:
    match = f'deployment="{NAME}"'

    def total() -> float:
        result = server.prometheus.query(f"sum(ray_llmkube_requests_total{{{match}}})")
        return float(result[0]["value"][1]) if result else 0.0

    wait_until(lambda: total() > 0, timeout=60, what="request counts in Prometheus")
    before = total()
    for _ in range(5):
        server.client.completions.create(model=NAME, prompt="x", max_tokens=3, temperature=0)
    # At least: counts of earlier tests' requests may still be arriving on a busy machine.
    wait_until(lambda: total() >= before + 5, timeout=60, what="5 more requests counted")
    for name in (
        "ray_llmkube_generated_tokens_total",
        "ray_llmkube_prompt_tokens_total",
        "ray_llmkube_requests_in_flight",
        "ray_llmkube_queue_depth",
        "ray_llmkube_batch_size",
        "ray_llmkube_time_to_first_token_seconds_bucket",
        "ray_llmkube_inter_token_latency_seconds_bucket",
        "ray_llmkube_request_duration_seconds_bucket",
    ):
        assert server.prometheus.query(f"{name}{{{match}}}"), f"no series for {name}"
    refused = server.prometheus.query(f'sum(ray_llmkube_requests_total{{{match},status="429"}})')
    assert refused
    assert float(refused[0]["value"][1]) > 0


def test_missing_model_is_a_clear_error(minio: MinioServer, tmp_path: Path) -> None:
    config = ServeRunConfig(
        deployment=JobIdentity(name="nothing"),
        model_uri="s3://serving-tests/no-such-model/model",
        replicas=1,
        gpus_per_replica=0,
        cpus_per_replica=1,
        serving=ServingSpec(),
        storage=StorageConfig(endpoint=minio.endpoint, insecure=True),
    )
    with ServeProcess(config, tmp_path, minio.env) as serve:
        deadline = time.monotonic() + 60
        while serve.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serve.process.returncode == 2
    assert "no model at s3://serving-tests/no-such-model/model" in serve.log
    assert "Traceback" not in serve.log


def test_a_port_in_use_is_a_clear_error(server: Server, minio: MinioServer, tmp_path: Path) -> None:
    config = ServeRunConfig(
        deployment=JobIdentity(name=NAME),
        model_uri=f"s3://serving-tests/{NAME}/model",
        replicas=1,
        gpus_per_replica=0,
        cpus_per_replica=1,
        serving=ServingSpec(),
        storage=StorageConfig(endpoint=minio.endpoint, insecure=True),
    )
    config_path = tmp_path / "serve.json"
    config_path.write_text(config.model_dump_json(by_alias=True))
    taken = server.serve.port
    result = subprocess.run(
        [*SERVE, "--config", str(config_path), "--port", str(taken)],
        env={**os.environ, **minio.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert f"port {taken} on 127.0.0.1 is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_console_relays_with_the_persons_key_and_shows_prometheus_numbers(
    server: Server, tmp_path: Path
) -> None:
    """The console over a data folder naming this server, with its Prometheus: the playground's
    relay passes the key the person typed (the console holds none), and the deployments page
    shows requests/s, TTFT and tokens/s from the same series as the dashboards."""
    folder = tmp_path / "serve" / NAME
    folder.mkdir(parents=True)
    (folder / "serve.json").write_text(server.serve.config_path.read_text())
    write_state(folder, "Serving", endpoint=f"{server.serve.url}/v1")
    console = TestClient(
        create_app(LocalSource(tmp_path), prometheus=PrometheusNumbers(server.prometheus.url))
    )
    page = console.get(f"/deployments/local/{NAME}/playground").text
    assert 'id="api_key"' in page  # the deployment wants a key: the page asks for it
    csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page)
    assert csrf
    body = {"model": NAME, "prompt": "The ", "max_tokens": 4, "stream": True}
    relay = f"/api/deployments/local/{NAME}/completions"
    headers = {CSRF_HEADER: csrf.group(1)}
    without_key = console.post(relay, json=body, headers=headers)
    assert without_key.status_code == 401, without_key.text
    assert without_key.json()["error"]["code"] == "invalid_api_key", without_key.text
    for _ in range(3):
        answer = console.post(relay, json=body, headers={**headers, API_KEY_HEADER: API_KEY})
        assert answer.status_code == 200, answer.text
        assert answer.text.rstrip().endswith("data: [DONE]")
    models = console.get(f"/api/deployments/local/{NAME}/models", headers={API_KEY_HEADER: API_KEY})
    assert [m["id"] for m in models.json()["data"]] == [NAME]

    def rate_shown() -> bool:
        rows = console.get("/deployments/rows").text
        found = re.search(r'class="requests-per-second">([0-9.,]+)<', rows)
        return found is not None and float(found.group(1).replace(",", "")) > 0

    wait_until(rate_shown, timeout=90, what="requests/s from Prometheus on the deployments page")
    rows = console.get("/deployments/rows").text
    assert re.search(r'class="ttft">\d+ ms<', rows), rows
    assert re.search(r'class="tokens-per-second">[0-9.,]+<', rows), rows
