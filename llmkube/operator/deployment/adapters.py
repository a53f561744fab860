"""Which of a deployment's LoRA adapters reach its replicas. Each is resolved (its URI, or what
its LoRA training job published) and checked in object storage against the model the deployment
serves: trained on that very base (its digest), of a rank the serving spec allows. What passes
goes into the Serve config's user_config, which Ray Serve applies to running replicas in place;
the rest is reported, per adapter, in status. The replica checks again when it loads one."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from llmkube.api import LLMDeployment
from llmkube.api.deployment import AdapterSource, AdapterStatus
from llmkube.api.runconfig import StorageConfig
from llmkube.operator.kube import MODEL_PUBLISHERS, KubeApi
from llmkube.operator.quick_store import quick_store
from llmkube.storage import NotFoundError, ObjectStore, StorageError
from llmkube.storage.models import adapter_problem, folder_digest, inspect_model


@dataclass(frozen=True)
class AdapterChoice:
    uris: dict[str, str] = field(default_factory=dict)
    """What the replicas serve: name → adapter folder."""
    statuses: list[AdapterStatus] = field(default_factory=list)


class _NoAdaptersError(StorageError):
    """The served model takes no adapters."""


@dataclass(frozen=True)
class _Base:
    uri: str
    digest: str


def _resolve(api: KubeApi, namespace: str, source: AdapterSource) -> AdapterStatus:
    if source.uri is not None:
        return AdapterStatus(name=source.name, uri=source.uri, state="Ready")
    reference = source.training_job_ref
    assert reference is not None  # the model validator guarantees one of the two
    body = api.get(MODEL_PUBLISHERS[reference.kind], namespace, reference.name)
    if body is None:
        return AdapterStatus(
            name=source.name,
            state="Waiting",
            message=f"{reference.kind} {reference.name} not found in namespace {namespace}",
        )
    status = body.get("status") or {}
    published = (status.get("model") or {}).get("uri")
    if status.get("phase") == "Succeeded" and published:
        return AdapterStatus(name=source.name, uri=published, state="Ready")
    return AdapterStatus(
        name=source.name,
        state="Waiting",
        message=f"waiting for {reference.kind} {reference.name} to succeed "
        f"(it is {status.get('phase') or 'Pending'})",
    )


def _base(model_uri: str, storage: StorageConfig, credentials: Mapping[str, str]) -> _Base:
    """The Hugging Face model adapters go on: the served model, or the base of a served
    adapter. Raises StorageError (NotAModelError for a GPT: it takes no adapters)."""

    def store(uri: str) -> ObjectStore:
        return quick_store(uri, storage, credentials)

    served = inspect_model(store(model_uri), model_uri)
    base_uri = served.base_uri if served.format == "lora" else model_uri
    assert base_uri is not None
    base = served if served.format != "lora" else inspect_model(store(base_uri), base_uri)
    if base.format == "gpt":
        raise _NoAdaptersError(
            f"{model_uri} is an llmkube GPT, which takes no LoRA adapters; serve a Hugging Face "
            "model (an imported one or a fine-tune) to add adapters"
        )
    return _Base(base.uri, folder_digest(store(base.uri), base.uri))


def choose_adapters(
    api: KubeApi,
    deployment: LLMDeployment,
    *,
    model_uri: str,
    storage: StorageConfig,
    credentials: Mapping[str, str],
) -> AdapterChoice:
    sources = deployment.spec.model.adapters
    if not sources:
        return AdapterChoice()
    namespace = deployment.metadata.namespace or "default"
    statuses = [_resolve(api, namespace, source) for source in sources]
    ready = [s for s in statuses if s.state == "Ready"]
    if not ready:
        return AdapterChoice({}, statuses)
    try:
        base: _Base | None = _base(model_uri, storage, credentials)
    except _NoAdaptersError as error:
        for status in ready:
            status.state, status.message = "Refused", str(error)
        return AdapterChoice({}, statuses)
    except StorageError as error:
        base = None  # unchecked here; the replica checks each adapter as it loads it
        unchecked = f"not checked ({error}); the replica checks it when it loads it"
        for status in ready:
            status.message = unchecked
    max_rank = deployment.spec.serving.max_lora_rank
    for status in ready:
        assert status.uri is not None
        if base is None:
            continue
        try:
            adapter = inspect_model(
                quick_store(status.uri, storage, credentials),
                status.uri,
            )
        except NotFoundError as error:
            status.state, status.message = "Refused", str(error)
            continue
        except StorageError as error:
            status.message = f"not checked ({error}); the replica checks it when it loads it"
            continue
        problem = adapter_problem(
            adapter, base_uri=base.uri, base_digest=base.digest, max_rank=max_rank
        )
        if problem is not None:
            status.state, status.message = "Refused", problem
        else:
            status.uri = adapter.uri  # the version the replicas load, pinned like the model
    uris = {s.name: s.uri for s in statuses if s.state == "Ready" and s.uri is not None}
    return AdapterChoice(uris, statuses)
