"""Reconciling an LLMTrainingJob: validate, check the Secret, ensure ConfigMap + RayJob, report."""

import json
import logging
from typing import Any

from llmkube.api import LLMTrainingJob
from llmkube.api.runconfig import training_run_config
from llmkube.operator.blocked import InvalidSpecError, MissingSecretError, block, parsed
from llmkube.operator.conditions import utcnow
from llmkube.operator.kube import (
    CONFIGMAPS,
    NETWORK_POLICIES,
    PODS,
    RAYJOBS,
    SECRETS,
    TRAINING_JOBS,
    KubeApi,
)
from llmkube.operator.naming import (
    APPLIED_SPEC_ANNOTATION,
    RAY_CLUSTER_LABEL,
    TRAINING_JOB_LABEL,
    rayjob_name,
)
from llmkube.operator.owned import NameConflictError, create_or_get_owned
from llmkube.operator.patches import changed_paths
from llmkube.operator.registry import TrainingPhasesAndRetries
from llmkube.operator.scheduling import waiting_for
from llmkube.operator.secret_refs import credentials_env, find_secret
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.status_writer import current_status, write_training_status
from llmkube.operator.training.builders import (
    applied_spec,
    build_rayjob,
    build_run_configmap,
    build_training_network_policy,
)
from llmkube.operator.training.output_check import OutputInUseError, output_problem
from llmkube.operator.training.progress import read_snapshot
from llmkube.operator.training.status import training_status
from llmkube.storage import StorageError

log = logging.getLogger(__name__)

STARTING = ("", "New", "Initializing")
"""KubeRay's jobDeploymentStatus while the job's Ray cluster is not ready yet."""


def _credentials(
    body: dict[str, Any],
    job: LLMTrainingJob,
    api: KubeApi,
    registry: TrainingPhasesAndRetries,
    now: str,
) -> dict[str, str]:
    reference = job.spec.storage.credentials_secret
    if reference is None:
        return {}
    keys = [reference.access_key_id_key, reference.secret_access_key_key]
    secret, problem = find_secret(api, job.metadata.namespace or "default", reference.name, keys)
    if secret is None:
        block(
            MissingSecretError(
                f"{problem} with the S3 access key pair (see examples/minio-credentials.yaml). "
                "The job starts as soon as it exists."
            ),
            current_status(body),
            lambda status: write_training_status(api, body, status, registry),
            generation=job.metadata.generation,
            now=now,
        )
    return credentials_env(secret, job.spec.storage)


def ignored_spec_changes(rayjob: dict[str, Any], job: LLMTrainingJob) -> list[str]:
    """Spec fields changed since the RayJob was built (they cannot be applied to it)."""
    applied = (rayjob.get("metadata", {}).get("annotations") or {}).get(APPLIED_SPEC_ANNOTATION)
    if applied is None:
        return []
    return [
        f"spec.{path}" for path in changed_paths(json.loads(applied), json.loads(applied_spec(job)))
    ]


def _ensure_children(
    job: LLMTrainingJob, api: KubeApi, settings: OperatorSettings
) -> tuple[dict[str, Any], bool]:
    """(RayJob, created now). Create-first: a new job costs two requests, not a 404 first."""
    namespace = job.metadata.namespace or "default"
    name = rayjob_name(job.metadata.name)
    configmap = build_run_configmap(
        job, training_run_config(job, default_endpoint=settings.s3_endpoint)
    )
    if settings.network_policies:
        create_or_get_owned(
            api, NETWORK_POLICIES, namespace, build_training_network_policy(job, settings)
        )
    existing, created = create_or_get_owned(api, CONFIGMAPS, namespace, configmap)
    if not created and existing.get("data") != configmap["data"]:
        rayjob = api.get(RAYJOBS, namespace, name)
        if rayjob is not None:
            return rayjob, False  # running from the older spec; reported as ImmutableSpec
        # Left by a reconcile that died before creating the RayJob, from an older spec.
        configmap_name = configmap["metadata"]["name"]
        api.patch(CONFIGMAPS, namespace, configmap_name, {"data": configmap["data"]})
    return create_or_get_owned(
        api, RAYJOBS, namespace, build_rayjob(job, default_image=settings.runtime_image)
    )


def reconcile_training_job(
    body: dict[str, Any],
    api: KubeApi,
    settings: OperatorSettings,
    registry: TrainingPhasesAndRetries,
) -> None:
    """Idempotent: safe to run again at any point, after any crash."""
    now = utcnow()
    job, problem = parsed(body, LLMTrainingJob)
    if job is None:
        assert problem is not None
        if _follow_despite_invalid_spec(body, problem, api, registry, now):
            return
        block(
            InvalidSpecError(problem),
            current_status(body),
            lambda status: write_training_status(api, body, status, registry),
            generation=body["metadata"].get("generation"),
            now=now,
        )
    credentials = _credentials(body, job, api, registry, now)
    namespace = job.metadata.namespace or "default"
    name = rayjob_name(job.metadata.name)
    if api.get(RAYJOBS, namespace, name) is None:
        problem = output_problem(job, credentials, settings.s3_endpoint)
        if problem is not None:
            block(
                OutputInUseError(problem),
                current_status(body),
                lambda status: write_training_status(api, body, status, registry),
                generation=job.metadata.generation,
                now=now,
            )

    try:
        rayjob, created = _ensure_children(job, api, settings)
    except NameConflictError as error:
        api.post_event(body, type="Warning", reason=error.reason, message=str(error))
        block(
            error,
            current_status(body),
            lambda status: write_training_status(api, body, status, registry),
            generation=job.metadata.generation,
            now=now,
        )
    ignored: list[str] = []
    if not created:
        ignored = ignored_spec_changes(rayjob, job)
        queued = job.spec.scheduling.queue_name is not None  # Kueue owns suspend then
        if not queued and bool(rayjob.get("spec", {}).get("suspend")) != job.spec.suspend:
            rayjob = api.patch(RAYJOBS, namespace, name, {"spec": {"suspend": job.spec.suspend}})

    status = training_status(
        current_status(body),
        job,
        rayjob_name=name,
        rayjob_status=rayjob.get("status"),
        snapshot=None,
        ignored_spec_changes=ignored,
        now=now,
    )
    write_training_status(api, body, status, registry)


def applied_job(body: dict[str, Any], rayjob: dict[str, Any] | None) -> LLMTrainingJob | None:
    """The job as its RayJob was built from it (the applied-spec annotation), under the body's
    metadata; None without a RayJob."""
    annotations = ((rayjob or {}).get("metadata") or {}).get("annotations") or {}
    applied = annotations.get(APPLIED_SPEC_ANNOTATION)
    if applied is None:
        return None
    spec = {key: value for key, value in json.loads(applied).items() if value is not None}
    job, _ = parsed({"metadata": body["metadata"], "spec": spec}, LLMTrainingJob)
    return job


def _follow_despite_invalid_spec(
    body: dict[str, Any], problem: str, api: KubeApi, registry: TrainingPhasesAndRetries, now: str
) -> bool:
    """A spec edited into an invalid one while its RayJob runs: the RayJob goes on with the spec
    it was built from, so the status keeps following it and says that the spec is invalid.
    False when nothing runs (the job is then simply InvalidSpec)."""
    meta = body["metadata"]
    rayjob = api.get(RAYJOBS, meta["namespace"], rayjob_name(meta["name"]))
    running = applied_job(body, rayjob)
    if rayjob is None or running is None:
        return False
    status = training_status(
        current_status(body),
        running,
        rayjob_name=rayjob_name(meta["name"]),
        rayjob_status=rayjob.get("status"),
        snapshot=None,
        ignored_spec_changes=[],
        now=now,
        invalid_spec=problem,
    )
    write_training_status(api, body, status, registry)
    return True


def refresh_training_status(
    api: KubeApi,
    namespace: str,
    job_name: str,
    settings: OperatorSettings,
    registry: TrainingPhasesAndRetries,
    *,
    rayjob: dict[str, Any] | None = None,
    read_progress: bool,
    unscheduled: list[dict[str, Any]] | None = None,
) -> None:
    """Re-derive a job's status from its RayJob (and progress files). A no-op for jobs the
    reconcile has not set up yet: it owns that path. `unscheduled`: the job's Ray pods no node
    was found for (`unscheduled_ray_pods`); None keeps what the status last said about them."""
    body = api.get(TRAINING_JOBS, namespace, job_name)
    if body is None:
        return
    rayjob = rayjob or api.get(RAYJOBS, namespace, rayjob_name(job_name))
    if rayjob is None:
        return
    valid, problem = parsed(body, LLMTrainingJob)
    job = valid or applied_job(body, rayjob)  # an invalid spec: follow what runs
    if job is None:
        return
    if unscheduled is None:
        unschedulable = current_status(body).waiting_for
    else:
        unschedulable = _waiting_for(job, rayjob, unscheduled)
    snapshot = None
    if read_progress:
        try:
            secret_ref = job.spec.storage.credentials_secret
            secret = api.get(SECRETS, namespace, secret_ref.name) if secret_ref else None
            credentials = credentials_env(secret or {}, job.spec.storage)
            snapshot = read_snapshot(job, credentials, settings.s3_endpoint)
        except StorageError as error:
            # Progress is best-effort; the phase still updates and the next tick retries.
            log.warning("progress of %s/%s unreadable: %s", namespace, job_name, error)
    status = training_status(
        current_status(body),
        job,
        rayjob_name=rayjob_name(job_name),
        rayjob_status=rayjob.get("status"),
        snapshot=snapshot,
        ignored_spec_changes=[] if problem else ignored_spec_changes(rayjob, job),
        now=utcnow(),
        invalid_spec=problem,
        unschedulable=unschedulable,
    )
    write_training_status(api, body, status, registry)


def _waiting_for(
    job: LLMTrainingJob, rayjob: dict[str, Any], unscheduled: list[dict[str, Any]]
) -> str | None:
    """While the RayJob's cluster starts: why the scheduler cannot place its pods, if so."""
    status = rayjob.get("status") or {}
    cluster = status.get("rayClusterName")
    if status.get("jobDeploymentStatus") not in STARTING or not cluster:
        return None
    pods = [
        pod for pod in unscheduled if pod["metadata"]["labels"].get(RAY_CLUSTER_LABEL) == cluster
    ]
    return waiting_for(pods, of=job.spec.resources.workers + 1)  # the head and the workers


def unscheduled_ray_pods(api: KubeApi, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """The training jobs' Ray pods in `namespace` not bound to a node yet, by job (the value of
    their job label). One LIST for all pending jobs: the apiserver filters on spec.nodeName, so
    the answer holds only pods that wait, however many run."""
    pods = api.list(
        PODS, namespace, label_selector=TRAINING_JOB_LABEL, field_selector="spec.nodeName="
    )
    by_job: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_job.setdefault(pod["metadata"]["labels"][TRAINING_JOB_LABEL], []).append(pod)
    return by_job
