"""A Hugging Face model with LoRA adapters behind the Ray Serve app, for real: a tiny Llama and
its adapters in MinIO, Serve started by the serve entrypoint with the declarative config a
RayService carries, the official openai client, a real Prometheus. Adapters are added and
removed while it serves by rewriting that config, as the operator rewrites serveConfigV2."""

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from llmkube.api.deployment import ServingSpec
from llmkube.api.runconfig import AdapterConfig, JobIdentity, ServeRunConfig, StorageConfig
from llmkube.local.runner import write_run_config
from llmkube.storage import open_store
from llmkube.storage.models import folder_digest
from llmkube.testing.minio import MinioServer
from llmkube.testing.pretrained import publish_adapter, upload_folder, write_tiny_model
from llmkube.testing.processes import free_port, wait_until
from llmkube.testing.prometheus import PrometheusServer
from llmkube.testing.serving import ServeProcess

NAME = "tiny"
BUCKET = "adapter-serving"
MAX_RANK = 8


class Server:
    def __init__(
        self,
        serve: ServeProcess,
        prometheus: PrometheusServer,
        config: ServeRunConfig,
        adapters: dict[str, str],
    ) -> None:
        self.serve = serve
        self.prometheus = prometheus
        self.config = config
        self.adapters = adapters
        """Every adapter published for these tests: name → URI."""
        self.client = openai.OpenAI(base_url=f"{serve.url}/v1", api_key="none", max_retries=0)
        self.async_client = openai.AsyncOpenAI(
            base_url=f"{serve.url}/v1", api_key="none", max_retries=0, timeout=120
        )
        self.http = httpx.Client(base_url=serve.url, timeout=60)

    def models(self) -> list[str]:
        return [model.id for model in self.client.models.list()]

    def serve_adapters(self, *names: str) -> None:
        """Rewrite the running server's config with these adapters, and wait for them."""
        adapters = [AdapterConfig(name=name, uri=self.adapters[name]) for name in names]
        self.config = self.config.model_copy(update={"adapters": adapters})
        write_run_config(self.config, self.serve.config_path)
        wait_until(
            lambda: sorted(self.models()) == sorted([NAME, *names]),
            timeout=120,
            what=f"the server to serve {names}",
        )


@pytest.fixture(scope="module")
def server(minio: MinioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    minio.make_bucket(BUCKET)
    storage = StorageConfig(endpoint=minio.endpoint, insecure=True)
    store = open_store(f"s3://{BUCKET}", storage, environ=minio.env)
    folder = write_tiny_model(tmp_path_factory.mktemp("base") / "llama", "llama")
    base_uri = upload_folder(store, f"s3://{BUCKET}/models/tiny-llama", folder)
    digest = folder_digest(store, base_uri)
    adapters = {
        name: publish_adapter(
            store,
            f"s3://{BUCKET}/jobs/{name}/model",
            base_folder=folder,
            base_uri=base_uri,
            base_digest=digest,
            seed=seed,
            rank=rank,
        )
        for name, seed, rank in [("alpha", 1, 4), ("beta", 2, 4), ("gamma", 3, 4), ("wide", 4, 16)]
    }
    adapters["stale"] = publish_adapter(
        store,
        f"s3://{BUCKET}/jobs/stale/model",
        base_folder=folder,
        base_uri=base_uri,
        base_digest="sha256:" + "0" * 64,  # trained on a base that has changed since
        seed=5,
    )
    config = ServeRunConfig(
        deployment=JobIdentity(name=NAME, namespace="test"),
        model_uri=base_uri,
        replicas=1,
        gpus_per_replica=0,
        cpus_per_replica=1,
        serving=ServingSpec(
            max_batch_size=8, max_tokens=64, max_prompt_tokens=128, max_lora_rank=MAX_RANK
        ),
        adapters=[AdapterConfig(name=n, uri=adapters[n]) for n in ("alpha", "beta")],
        storage=storage,
    )
    metrics_port = free_port()
    env = {
        **minio.env,
        "LLMKUBE_RAY_METRICS_PORT": str(metrics_port),
        "RAY_metrics_report_interval_ms": "1000",
        "LLMKUBE_MODEL_CACHE": str(tmp_path_factory.mktemp("model-cache")),
    }
    with (
        PrometheusServer.start([f"127.0.0.1:{metrics_port}"]) as prometheus,
        ServeProcess(config, tmp_path_factory.mktemp("serve"), env) as serve,
    ):
        serve.wait_ready()
        yield Server(serve, prometheus, config, adapters)


def _complete(server: Server, model: str, prompt: str, tokens: int = 24) -> str:
    answer = server.client.completions.create(
        model=model, prompt=prompt, max_tokens=tokens, temperature=0
    )
    return answer.choices[0].text


def test_the_base_and_each_adapter_are_models_that_answer_differently(server: Server) -> None:
    assert server.models() == [NAME, "alpha", "beta"]
    answers = {model: _complete(server, model, "The for statement") for model in server.models()}
    assert all(answers.values()), answers
    assert len(set(answers.values())) == 3, answers


@pytest.mark.parametrize("model", [NAME, "alpha"])
def test_openai_conformance_on_the_base_and_an_adapter(server: Server, model: str) -> None:
    whole = server.client.completions.create(
        model=model, prompt="for loops", max_tokens=20, temperature=0
    )
    assert whole.model == model
    assert whole.usage is not None
    assert whole.usage.completion_tokens <= 20
    streamed = server.client.completions.create(
        model=model, prompt="for loops", max_tokens=20, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].text for chunk in streamed) == whole.choices[0].text
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "system", "content": "You explain Python."},
        {"role": "user", "content": "What does the with statement do?"},
    ]
    chat = server.client.chat.completions.create(
        model=model, messages=messages, max_tokens=20, temperature=0
    )
    text = chat.choices[0].message.content or ""
    chunks = server.client.chat.completions.create(
        model=model, messages=messages, max_tokens=20, temperature=0, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == text
    for marker in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert marker not in text  # template tokens never reach the answer

    def sample(seed: int) -> str:
        return (
            server.client.completions.create(
                model=model, prompt="x", max_tokens=12, temperature=1.0, seed=seed
            )
            .choices[0]
            .text
        )

    assert sample(7) == sample(7)


def test_mixed_adapter_streams_in_one_batch_equal_each_alone(server: Server) -> None:
    models = [NAME, "alpha", "beta"]
    prompts = ["class ", "The while statement", "yield"]
    alone = {(m, p): _complete(server, m, p) for m in models for p in prompts}

    async def together() -> dict[tuple[str, str], str]:
        async def stream(model: str, prompt: str) -> tuple[tuple[str, str], str]:
            chunks = await server.async_client.completions.create(
                model=model, prompt=prompt, max_tokens=24, temperature=0, stream=True
            )
            return (model, prompt), "".join([c.choices[0].text async for c in chunks])

        jobs = [stream(m, p) for m in models for p in prompts]
        return dict(await asyncio.gather(*jobs))

    assert asyncio.run(together()) == alone


def test_an_unknown_adapter_is_404_naming_those_served(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        server.client.completions.create(model="delta", prompt="x", max_tokens=2)
    error = raised.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found"
    assert all(f"`{name}`" in error["message"] for name in (NAME, "alpha", "beta"))


def test_chat_with_an_unknown_role_is_400(server: Server) -> None:
    answer = server.http.post(
        "/v1/chat/completions",
        json={"model": "alpha", "messages": [{"role": "robot", "content": "hi"}]},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "messages.0.role"


def test_adapters_are_added_and_removed_in_place(server: Server) -> None:
    before = _complete(server, "alpha", "The import system")
    served = server.http.get("/healthz").json()["generated_tokens"]
    server.serve_adapters("alpha", "gamma")
    assert _complete(server, "gamma", "The import system") != before
    with pytest.raises(openai.NotFoundError):
        server.client.completions.create(model="beta", prompt="x", max_tokens=2)
    # The same replica: its token count went on instead of starting again from zero.
    assert server.http.get("/healthz").json()["generated_tokens"] > served
    assert _complete(server, "alpha", "The import system") == before
    server.serve_adapters("alpha", "beta")
    assert "reconfigured tiny" in server.serve.log


def test_adapters_that_do_not_fit_the_base_are_left_out_with_the_reason(server: Server) -> None:
    adapters = [AdapterConfig(name=n, uri=server.adapters[n]) for n in ("alpha", "stale", "wide")]
    server.config = server.config.model_copy(update={"adapters": adapters})
    write_run_config(server.config, server.serve.config_path)

    def not_loaded() -> dict[str, str]:
        loaded: dict[str, str] = server.http.get("/v1/adapters").json()["not_loaded"]
        return loaded

    wait_until(lambda: len(not_loaded()) == 2, timeout=120, what="both adapters to be refused")
    problems = not_loaded()
    assert "trained on" in problems["stale"]
    assert "retrain the adapter" in problems["stale"]
    assert f"rank 16, above serving.maxLoraRank {MAX_RANK}" in problems["wide"]
    assert server.models() == [NAME, "alpha"]
    server.serve_adapters("alpha", "beta")


def test_prometheus_sees_each_adapter(server: Server) -> None:
    for model in ("alpha", "beta"):
        _complete(server, model, "x", tokens=3)

    def series(query: str) -> list[dict[str, object]]:
        found: list[dict[str, object]] = server.prometheus.query(query)
        return found

    beta = f'ray_llmkube_generated_tokens_total{{deployment="{NAME}",model="beta"}}'
    wait_until(
        lambda: bool(series(beta)),
        timeout=60,
        what="per-adapter token counts in Prometheus",
    )
    models = {
        str(s["metric"]["model"])  # type: ignore[index]
        for s in series(f'ray_llmkube_requests_total{{deployment="{NAME}"}}')
    }
    assert {NAME, "alpha", "beta"} <= models
    assert "delta" not in models  # a 404 never becomes a label
    loaded = f'ray_llmkube_adapters_loaded{{deployment="{NAME}"}} == 2'
    wait_until(
        lambda: bool(series(loaded)),
        timeout=60,
        what="the loaded-adapters gauge",
    )
