"""Reconciling an LLMDeployment: resolve the model, ensure RayService + Service (+ ServiceMonitor),
report status. Idempotent, like the training reconcile."""

import hashlib
import json
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from llmkube.api import LLMDeployment
from llmkube.api.deployment import ServedModel
from llmkube.api.runconfig import StorageConfig, serve_run_config, storage_config
from llmkube.operator.blocked import InvalidSpecError, MissingSecretError, block, parsed
from llmkube.operator.conditions import ConditionStatus, set_condition, utcnow
from llmkube.operator.deployment.adapters import choose_adapters
from llmkube.operator.deployment.builders import (
    build_deployment_network_policy,
    build_rayservice,
    build_service,
    build_service_monitor,
)
from llmkube.operator.deployment.status import ModelChoice, deployment_status, spec_applied
from llmkube.operator.kube import (
    DEPLOYMENTS,
    MODEL_PUBLISHERS,
    NETWORK_POLICIES,
    PODS,
    RAYCLUSTERS,
    RAYSERVICES,
    SERVICE_MONITORS,
    SERVICES,
    ApiError,
    KubeApi,
)
from llmkube.operator.naming import (
    APPLIED_SPEC_ANNOTATION,
    MODEL_VERSION_ANNOTATION,
    RAY_CLUSTER_LABEL,
    rayservice_name,
)
from llmkube.operator.owned import NameConflictError, create_or_get_owned, delete_owned
from llmkube.operator.quick_store import quick_store
from llmkube.operator.scheduling import waiting_for
from llmkube.operator.secret_refs import credentials_env, find_secret
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.status_writer import current_deployment_status, write_deployment_status
from llmkube.storage import StorageError
from llmkube.storage.models import folder_digest
from llmkube.storage.versions import ResolvedModel, resolve_model


def model_version(uri: str, published_at: str | None) -> str:
    """Stands in for the content's version while storage cannot be read: changes with each
    publication, even of the same bytes."""
    return hashlib.sha256(f"{uri}@{published_at or ''}".encode()).hexdigest()[:12]


def content_version(
    uri: str, storage: StorageConfig, credentials: Mapping[str, str]
) -> ResolvedModel | None:
    """The folder the model at `uri` is read from, and its version: the one a job's model/
    points at, or a digest of a plain folder's files (names, sizes, content hashes). The same
    bytes published again are the same version, and roll nothing out. None when storage cannot
    be read now."""
    try:
        store = quick_store(uri, storage, credentials)
        resolved = resolve_model(store, uri)
        if resolved.version is not None:
            return resolved
        if not store.list(uri.rstrip("/") + "/"):
            return None  # nothing there (yet): not a version of anything
        digest = folder_digest(store, uri)
    except StorageError:
        return None
    return ResolvedModel(uri, digest.removeprefix("sha256:")[:12])


def choose_model(
    api: KubeApi,
    deployment: LLMDeployment,
    storage: StorageConfig | None = None,
    credentials: Mapping[str, str] | None = None,
) -> ModelChoice:
    """The model to serve now: the URI, or what the referenced job published when it succeeded;
    versioned by content when `storage` can be read."""

    def served(uri: str, published_at: str | None, training_job: str | None) -> ServedModel:
        found = content_version(uri, storage, credentials or {}) if storage else None
        if found is None:
            version = model_version(uri, published_at)
            return ServedModel(uri=uri, training_job=training_job, version=version)
        folder = found.uri if found.uri != uri else None
        return ServedModel(uri=uri, training_job=training_job, version=found.version, folder=folder)

    if deployment.spec.model.uri is not None:
        return ModelChoice(served(deployment.spec.model.uri, None, None))
    reference = deployment.spec.model.training_job_ref
    assert reference is not None  # the model validator guarantees one of the two
    namespace = deployment.metadata.namespace or "default"
    body = api.get(MODEL_PUBLISHERS[reference.kind], namespace, reference.name)
    if body is None:
        return ModelChoice(
            None,
            "TrainingJobNotFound",
            f"{reference.kind} {reference.name} not found in namespace {namespace}; create it or "
            "fix model.trainingJobRef",
        )
    status = body.get("status") or {}
    phase = status.get("phase") or "Pending"
    published = (status.get("model") or {}).get("uri")
    if phase == "Succeeded" and published:
        return ModelChoice(served(published, status.get("completionTime"), reference.name))
    progress = (status.get("progress") or {}).get("summary") or status.get("trialsSummary")
    detail = f"{phase}, {progress}" if progress else phase
    reason = "TrainingJobFailed" if phase == "Failed" else "WaitingForModel"
    return ModelChoice(
        None, reason, f"waiting for {reference.kind} {reference.name} to succeed (it is {detail})"
    )


def serving_cluster(rayservice: dict[str, Any] | None) -> str | None:
    """The RayCluster KubeRay routes traffic to (its active cluster), once there is one."""
    active = ((rayservice or {}).get("status") or {}).get("activeServiceStatus") or {}
    name: str | None = active.get("rayClusterName") or None
    return name


def starting_cluster(rayservice: dict[str, Any] | None) -> str | None:
    """The RayCluster KubeRay is bringing up (the first one, or a rollout's new one), if any."""
    pending = ((rayservice or {}).get("status") or {}).get("pendingServiceStatus") or {}
    name: str | None = pending.get("rayClusterName") or None
    return name


def waiting_pods(
    api: KubeApi, namespace: str, deployment: LLMDeployment, rayservice: dict[str, Any] | None
) -> str | None:
    """Why the starting cluster's pods wait on the scheduler, if they do (one LIST of its pods
    not bound to a node yet)."""
    cluster = starting_cluster(rayservice)
    if cluster is None:
        return None
    unbound = api.list(
        PODS,
        namespace,
        label_selector=f"{RAY_CLUSTER_LABEL}={cluster}",
        field_selector="spec.nodeName=",
    )
    return waiting_for(unbound, of=deployment.spec.replicas + 1)  # the head and a worker each


def live_version(api: KubeApi, namespace: str, rayservice: dict[str, Any] | None) -> str | None:
    """The model version of the cluster KubeRay routes traffic to (it copies our pod-template
    annotations onto the RayCluster it creates)."""
    cluster_name = serving_cluster(rayservice)
    if cluster_name is None:
        return None
    cluster = api.get(RAYCLUSTERS, namespace, cluster_name)
    if cluster is None:
        return None
    template = cluster["spec"]["headGroupSpec"].get("template", {})
    version: str | None = (template.get("metadata", {}).get("annotations") or {}).get(
        MODEL_VERSION_ANNOTATION
    )
    return version


def _check_secrets(body: dict[str, Any], deployment: LLMDeployment, api: KubeApi, now: str) -> None:
    namespace = deployment.metadata.namespace or "default"
    wanted = []
    if deployment.spec.storage.credentials_secret is not None:
        ref = deployment.spec.storage.credentials_secret
        wanted.append((ref.name, [ref.access_key_id_key, ref.secret_access_key_key]))
    if deployment.spec.serving.api_key_secret is not None:
        key_ref = deployment.spec.serving.api_key_secret
        wanted.append((key_ref.name, [key_ref.key]))
    for name, keys in wanted:
        _, problem = find_secret(api, namespace, name, keys)
        if problem is not None:
            block(
                MissingSecretError(f"{problem}. The deployment starts as soon as it exists."),
                current_deployment_status(body),
                lambda status: write_deployment_status(api, body, status),
                generation=deployment.metadata.generation,
                now=now,
            )


def _credentials(api: KubeApi, deployment: LLMDeployment) -> dict[str, str]:
    """The S3 credentials the replicas get, for the operator's own checks in storage."""
    reference = deployment.spec.storage.credentials_secret
    if reference is None:
        return {}
    keys = [reference.access_key_id_key, reference.secret_access_key_key]
    secret, _ = find_secret(api, deployment.metadata.namespace or "default", reference.name, keys)
    return credentials_env(secret or {}, deployment.spec.storage)


def _apply(
    api: KubeApi, resource: Any, namespace: str, desired: dict[str, Any], owned: list[str]
) -> dict[str, Any]:
    """Create, or merge-patch the `owned` top-level fields of spec (and the annotations) that
    drifted from `desired` (only in an object this deployment controls: see
    llmkube.operator.owned)."""
    existing, created = create_or_get_owned(api, resource, namespace, desired)
    if created:
        return existing
    patch: dict[str, Any] = {}
    changes = {
        key: desired["spec"].get(key)
        for key in owned
        if existing.get("spec", {}).get(key) != desired["spec"].get(key)
    }
    if changes:
        patch["spec"] = changes
    annotations = desired["metadata"].get("annotations") or {}
    current = existing["metadata"].get("annotations") or {}
    if any(current.get(key) != value for key, value in annotations.items()):
        patch["metadata"] = {"annotations": annotations}
    if not patch:
        return existing
    return api.patch(resource, namespace, desired["metadata"]["name"], patch)


def reconcile_deployment(
    body: dict[str, Any], api: KubeApi, settings: OperatorSettings
) -> LLMDeployment:
    now = utcnow()
    deployment, problem = parsed(body, LLMDeployment)
    if deployment is None:
        assert problem is not None
        running = _follow_despite_invalid_spec(api, body, problem, now)
        if running is not None:
            return running
        block(
            InvalidSpecError(problem),
            current_deployment_status(body),
            lambda status: write_deployment_status(api, body, status),
            generation=body["metadata"].get("generation"),
            now=now,
        )
    _check_secrets(body, deployment, api, now)
    namespace = deployment.metadata.namespace or "default"
    name = rayservice_name(deployment.metadata.name)
    credentials = _credentials(api, deployment)
    storage = storage_config(deployment.spec.storage, settings.s3_endpoint)
    choice = choose_model(api, deployment, storage, credentials)
    current = current_deployment_status(body)

    served = choice.served
    if served is None and current.model is not None and current.model.uri:
        served = current.model  # keep serving the last model while a re-run trains
    rayservice = None
    monitoring_problem: str | None = None
    adapters = None
    if served is not None and served.uri:
        model_uri = served.folder or served.uri
        adapters = choose_adapters(
            api,
            deployment,
            model_uri=model_uri,
            storage=storage,
            credentials=credentials,
        )
        run_config = serve_run_config(
            deployment,
            model_uri=model_uri,
            adapter_uris=adapters.uris,
            default_endpoint=settings.s3_endpoint,
            keys_mounted=True,
        )
        desired = build_rayservice(
            deployment,
            run_config,
            model_version=served.version or model_version(served.uri, None),
            default_image=settings.runtime_image,
        )
        try:
            rayservice = _ensure_children(api, namespace, deployment, desired, settings)
        except NameConflictError as error:
            api.post_event(body, type="Warning", reason=error.reason, message=str(error))
            block(
                error,
                current,
                lambda status: write_deployment_status(api, body, status),
                generation=deployment.metadata.generation,
                now=now,
            )
        monitoring_problem = _ensure_service_monitor(api, namespace, deployment)

    status = deployment_status(
        current,
        deployment,
        choice=ModelChoice(served, choice.waiting_reason, choice.waiting_message),
        rayservice_name=name,
        rayservice=rayservice,
        live_version=live_version(api, namespace, rayservice),
        adapters=adapters,
        unschedulable=waiting_pods(api, namespace, deployment, rayservice),
        now=now,
    )
    if rayservice is not None:
        monitored: tuple[ConditionStatus, str, str]
        if monitoring_problem:
            monitored = ("False", "ServiceMonitorUnavailable", monitoring_problem)
        elif deployment.spec.monitoring.service_monitor:
            monitored = ("True", "ServiceMonitor", "a ServiceMonitor selects the serving metrics")
        else:
            monitored = ("True", "Disabled", "monitoring.serviceMonitor is false")
        status.conditions = set_condition(
            status.conditions,
            type="Monitored",
            status=monitored[0],
            reason=monitored[1],
            message=monitored[2],
            generation=deployment.metadata.generation,
            now=now,
        )
    spec_applied(status, None, deployment.metadata.generation, now)
    write_deployment_status(api, body, status)
    return deployment


def _ensure_children(
    api: KubeApi,
    namespace: str,
    deployment: LLMDeployment,
    rayservice: dict[str, Any],
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The NetworkPolicy first (no Ray pod ever runs unfenced), then RayService and Service."""
    if settings.network_policies:
        policy = build_deployment_network_policy(deployment, settings)
        _apply(api, NETWORK_POLICIES, namespace, policy, ["podSelector", "policyTypes", "ingress"])
    if deployment.spec.scheduling.queue_name is not None:
        # Kueue suspends and resumes a queued cluster: keep what it last set.
        existing = api.get(RAYSERVICES, namespace, rayservice["metadata"]["name"])
        if existing is not None:
            suspended = existing["spec"]["rayClusterConfig"].get("suspend")
            rayservice["spec"]["rayClusterConfig"]["suspend"] = suspended
    applied = _apply(
        api,
        RAYSERVICES,
        namespace,
        rayservice,
        ["serveConfigV2", "rayClusterConfig", "upgradeStrategy", "excludeHeadPodFromServeSvc"],
    )
    route_traffic(api, namespace, deployment, applied)
    return applied


def route_traffic(
    api: KubeApi, namespace: str, deployment: LLMDeployment, rayservice: dict[str, Any]
) -> None:
    """Point the deployment's Service at the cluster KubeRay serves from (it switches clusters
    at the end of a rollout, which only a RayService event tells us)."""
    service = build_service(deployment, serving_cluster(rayservice))
    _apply(api, SERVICES, namespace, service, ["selector", "ports"])


def _ensure_service_monitor(api: KubeApi, namespace: str, deployment: LLMDeployment) -> str | None:
    """Create or remove the ServiceMonitor; a problem message instead of failing the deployment
    when the cluster has no prometheus-operator (serving works without it)."""
    name = deployment.metadata.name
    try:
        if deployment.spec.monitoring.service_monitor:
            monitor = build_service_monitor(deployment)
            _apply(api, SERVICE_MONITORS, namespace, monitor, ["selector", "endpoints"])
        else:
            delete_owned(api, SERVICE_MONITORS, namespace, name, deployment.metadata.uid or "")
    except ApiError as error:
        if error.status != 404:
            raise
        return (
            "the cluster has no ServiceMonitor CRD (prometheus-operator); install it, or set "
            "monitoring.serviceMonitor: false and scrape the Service's metrics port yourself"
        )
    return None


def applied_deployment(
    body: dict[str, Any], rayservice: dict[str, Any] | None
) -> LLMDeployment | None:
    """The deployment as its RayService was built from it, under the body's metadata and
    replicas; None without a RayService."""
    annotations = ((rayservice or {}).get("metadata") or {}).get("annotations") or {}
    applied = annotations.get(APPLIED_SPEC_ANNOTATION)
    if applied is None:
        return None
    spec = {key: value for key, value in json.loads(applied).items() if value is not None}
    replicas = (body.get("spec") or {}).get("replicas")
    if isinstance(replicas, int):
        spec["replicas"] = replicas
    deployment, _ = parsed({"metadata": body["metadata"], "spec": spec}, LLMDeployment)
    return deployment


def _follow_despite_invalid_spec(
    api: KubeApi, body: dict[str, Any], problem: str, now: str
) -> LLMDeployment | None:
    """A spec edited into an invalid one while its RayService serves: it goes on serving what
    it was built from, so the status keeps following it and says that the spec is invalid. None
    when nothing serves (the deployment is then simply InvalidSpec)."""
    meta = body["metadata"]
    rayservice = api.get(RAYSERVICES, meta["namespace"], rayservice_name(meta["name"]))
    running = applied_deployment(body, rayservice)
    if rayservice is None or running is None:
        return None
    _write_followed_status(api, body, running, rayservice, problem, now)
    return running


def _write_followed_status(
    api: KubeApi,
    body: dict[str, Any],
    deployment: LLMDeployment,
    rayservice: dict[str, Any],
    problem: str | None,
    now: str,
) -> None:
    current = current_deployment_status(body)
    status = deployment_status(
        current,
        deployment,
        choice=ModelChoice(current.model),
        rayservice_name=rayservice["metadata"]["name"],
        rayservice=rayservice,
        live_version=live_version(api, body["metadata"]["namespace"], rayservice),
        unschedulable=waiting_pods(api, body["metadata"]["namespace"], deployment, rayservice),
        now=now,
    )
    spec_applied(status, problem, deployment.metadata.generation, now)
    write_deployment_status(api, body, status)


def refresh_deployment_status(
    api: KubeApi, namespace: str, name: str, rayservice: dict[str, Any]
) -> None:
    """Re-derive status from a RayService event, and keep the Service on the cluster that
    serves (nothing else is touched); for a spec that turned invalid, from the spec the
    RayService was built from."""
    body = api.get(DEPLOYMENTS, namespace, name)
    if body is None:
        return
    valid, problem = parsed(body, LLMDeployment)
    deployment = valid or applied_deployment(body, rayservice)
    if deployment is None:
        return
    with suppress(NameConflictError):  # the reconcile reports it, and retries
        route_traffic(api, namespace, deployment, rayservice)
    _write_followed_status(api, body, deployment, rayservice, problem, utcnow())
