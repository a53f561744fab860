"""Reconciling an LLMTuningJob: validate, check the Secret, ensure ConfigMap + RayJob, report
the search's progress (and an Event when trials fail or are stopped early)."""

import json
import logging
from collections.abc import Callable
from typing import Any

from llmkube.api import LLMTuningJob, LLMTuningJobStatus
from llmkube.api.runconfig import tuning_run_config
from llmkube.api.tuning import TuningProgress
from llmkube.operator.blocked import InvalidSpecError, MissingSecretError, block, parsed
from llmkube.operator.conditions import utcnow
from llmkube.operator.kube import (
    CONFIGMAPS,
    NETWORK_POLICIES,
    RAYJOBS,
    SECRETS,
    TUNING_JOBS,
    KubeApi,
)
from llmkube.operator.naming import APPLIED_SPEC_ANNOTATION, tuning_rayjob_name
from llmkube.operator.owned import NameConflictError, create_or_get_owned
from llmkube.operator.patches import changed_paths
from llmkube.operator.registry import TrainingPhasesAndRetries
from llmkube.operator.secret_refs import credentials_env, find_secret
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.status_writer import current_tuning_status, write_tuning_status
from llmkube.operator.tuning.builders import (
    applied_spec,
    build_tuning_configmap,
    build_tuning_network_policy,
    build_tuning_rayjob,
)
from llmkube.operator.tuning.progress import read_search_progress, read_trial_records
from llmkube.operator.tuning.status import trial_events, tuning_status
from llmkube.storage import StorageError

log = logging.getLogger(__name__)


def _writer(
    api: KubeApi, body: dict[str, Any], registry: TrainingPhasesAndRetries, metric: str
) -> Callable[[LLMTuningJobStatus], bool]:
    return lambda status: write_tuning_status(api, body, status, registry, metric)


def _credentials(
    body: dict[str, Any], job: LLMTuningJob, api: KubeApi, registry: TrainingPhasesAndRetries
) -> dict[str, str]:
    storage = job.spec.template.storage
    reference = storage.credentials_secret
    if reference is None:
        return {}
    keys = [reference.access_key_id_key, reference.secret_access_key_key]
    secret, problem = find_secret(api, job.metadata.namespace or "default", reference.name, keys)
    if secret is None:
        block(
            MissingSecretError(
                f"{problem} with the S3 access key pair (see examples/minio-credentials.yaml). "
                "The search starts as soon as it exists."
            ),
            current_tuning_status(body),
            _writer(api, body, registry, job.spec.objective.metric),
            generation=job.metadata.generation,
            now=utcnow(),
        )
    return credentials_env(secret, storage)


def _ignored_spec_changes(rayjob: dict[str, Any], job: LLMTuningJob) -> list[str]:
    applied = (rayjob.get("metadata", {}).get("annotations") or {}).get(APPLIED_SPEC_ANNOTATION)
    if applied is None:
        return []
    return [
        f"spec.{path}" for path in changed_paths(json.loads(applied), json.loads(applied_spec(job)))
    ]


def _ensure_children(
    job: LLMTuningJob, api: KubeApi, settings: OperatorSettings
) -> tuple[dict[str, Any], bool]:
    namespace = job.metadata.namespace or "default"
    if settings.network_policies:
        create_or_get_owned(
            api, NETWORK_POLICIES, namespace, build_tuning_network_policy(job, settings)
        )
    configmap = build_tuning_configmap(
        job, tuning_run_config(job, default_endpoint=settings.s3_endpoint)
    )
    create_or_get_owned(api, CONFIGMAPS, namespace, configmap)
    return create_or_get_owned(
        api, RAYJOBS, namespace, build_tuning_rayjob(job, default_image=settings.runtime_image)
    )


def reconcile_tuning_job(
    body: dict[str, Any],
    api: KubeApi,
    settings: OperatorSettings,
    registry: TrainingPhasesAndRetries,
) -> None:
    """Idempotent: safe to run again at any point, after any crash."""
    now = utcnow()
    job, problem = parsed(body, LLMTuningJob)
    if job is None:
        assert problem is not None
        block(
            InvalidSpecError(problem),
            current_tuning_status(body),
            _writer(api, body, registry, "eval_loss"),
            generation=body["metadata"].get("generation"),
            now=now,
        )
    metric = job.spec.objective.metric
    _credentials(body, job, api, registry)
    try:
        rayjob, created = _ensure_children(job, api, settings)
    except NameConflictError as error:
        api.post_event(body, type="Warning", reason=error.reason, message=str(error))
        block(
            error,
            current_tuning_status(body),
            _writer(api, body, registry, metric),
            generation=job.metadata.generation,
            now=now,
        )
    status = tuning_status(
        current_tuning_status(body),
        job,
        rayjob_name=tuning_rayjob_name(job.metadata.name),
        rayjob_status=rayjob.get("status"),
        progress=None,
        ignored_spec_changes=[] if created else _ignored_spec_changes(rayjob, job),
        now=now,
    )
    write_tuning_status(api, body, status, registry, metric)


def refresh_tuning_status(
    api: KubeApi,
    namespace: str,
    name: str,
    settings: OperatorSettings,
    registry: TrainingPhasesAndRetries,
    *,
    rayjob: dict[str, Any] | None = None,
    read_progress: bool,
) -> None:
    """Re-derive a search's status from its RayJob and progress.json. A no-op for searches the
    reconcile has not set up, or whose spec is invalid: the reconcile reports those."""
    body = api.get(TUNING_JOBS, namespace, name)
    if body is None:
        return
    rayjob = rayjob or api.get(RAYJOBS, namespace, tuning_rayjob_name(name))
    job, _ = parsed(body, LLMTuningJob)
    if rayjob is None or job is None:
        return
    current = current_tuning_status(body)
    progress: TuningProgress | None = None
    credentials: dict[str, str] = {}
    if read_progress:
        try:
            reference = job.spec.template.storage.credentials_secret
            secret = api.get(SECRETS, namespace, reference.name) if reference else None
            credentials = credentials_env(secret or {}, job.spec.template.storage)
            progress = read_search_progress(job, credentials, settings.s3_endpoint)
        except StorageError as error:
            # Progress is best-effort; the phase still updates and the next tick retries.
            log.warning("progress of %s/%s unreadable: %s", namespace, name, error)
    status = tuning_status(
        current,
        job,
        rayjob_name=tuning_rayjob_name(name),
        rayjob_status=rayjob.get("status"),
        progress=progress,
        ignored_spec_changes=_ignored_spec_changes(rayjob, job),
        now=utcnow(),
    )
    if progress is not None:
        _post_trial_events(api, body, job, current, status, credentials, settings)
    write_tuning_status(api, body, status, registry, job.spec.objective.metric)


def _post_trial_events(
    api: KubeApi,
    body: dict[str, Any],
    job: LLMTuningJob,
    before: LLMTuningJobStatus,
    after: LLMTuningJobStatus,
    credentials: dict[str, str],
    settings: OperatorSettings,
) -> None:
    grew = (
        after.trials.failed > before.trials.failed
        or after.trials.stopped_early > before.trials.stopped_early
    )
    if not grew:
        return
    try:
        records = read_trial_records(job, credentials, settings.s3_endpoint)
    except StorageError as error:
        log.warning("trials of %s unreadable: %s", job.metadata.name, error)
        return
    for kind, reason, message in trial_events(
        before.trials, after.trials, records, job.spec.objective.metric
    ):
        api.post_event(body, type=kind, reason=reason, message=message)
