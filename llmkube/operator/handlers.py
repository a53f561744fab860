"""Kopf wiring: level-triggered watch handlers that call the reconcile functions.

Each event is handled from the object's current state, not from a diff: a new object, or one
whose spec changed (metadata.generation ahead of status.observedGeneration), is reconciled; every
other event (our own status writes) is skipped at once. Kopf therefore keeps no bookkeeping
annotations and adds no finalizers. Failures a retry can fix are scheduled on the background
loop; an invalid spec waits for the user to change it.
"""

import logging
from collections.abc import Callable
from typing import Any

import kopf

from llmkube.api import contract
from llmkube.operator.background import BackgroundLoop
from llmkube.operator.blocked import InvalidSpecError, MissingSecretError
from llmkube.operator.deployment.reconcile import (
    reconcile_deployment,
    refresh_deployment_status,
    starting_cluster,
)
from llmkube.operator.kube import DEPLOYMENTS, ApiError, KubeApi
from llmkube.operator.metrics import (
    DEPLOYMENT_PHASE_COUNTS,
    forget_replicas,
    forget_search,
    observe_reconcile,
    serve,
)
from llmkube.operator.naming import DEPLOYMENT_LABEL, TRAINING_JOB_LABEL, TUNING_JOB_LABEL
from llmkube.operator.owned import NameConflictError
from llmkube.operator.registry import DeploymentRegistry, TrainingPhasesAndRetries, job_key
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.training.reconcile import reconcile_training_job, refresh_training_status
from llmkube.operator.training.status import followed_state
from llmkube.operator.tuning.reconcile import reconcile_tuning_job, refresh_tuning_status

log = logging.getLogger(__name__)
REGISTRY = TrainingPhasesAndRetries()
DEPLOYMENT_REGISTRY = DeploymentRegistry()
# Retry delays: a missing Secret is usually being created right now; apiserver hiccups pass;
# anything else (RBAC, a rejected object) needs a human, so it is retried slowly.
MISSING_SECRET_RETRY_SECONDS = 10
TRANSIENT_RETRY_SECONDS = 5
NAME_CONFLICT_RETRY_SECONDS = 15  # the user removes or renames the other object
OTHER_ERROR_RETRY_SECONDS = 60
# RayJob states in which the runtime writes (or has written) progress files worth reading.
PROGRESS_STATES = ("Running", "Retrying", "Complete", "Failed")


def _handle_failures(kind: str, body: dict[str, Any], work: Callable[[], object]) -> None:
    """Run one reconcile; schedule a retry on the background loop for failures a retry can fix."""
    meta = body["metadata"]
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    try:
        with observe_reconcile(kind):
            work()
    except InvalidSpecError:
        pass  # reported in status; the next spec change reconciles again
    except MissingSecretError:
        REGISTRY.retry_later(uid, namespace, name, MISSING_SECRET_RETRY_SECONDS, kind)
    except NameConflictError:
        REGISTRY.retry_later(uid, namespace, name, NAME_CONFLICT_RETRY_SECONDS, kind)
    except ApiError as error:
        log.warning("reconciling %s %s/%s: %s", kind, namespace, name, error)
        delay = TRANSIENT_RETRY_SECONDS if error.transient else OTHER_ERROR_RETRY_SECONDS
        REGISTRY.retry_later(uid, namespace, name, delay, kind)
    except Exception:
        log.exception("reconciling %s %s/%s failed", kind, namespace, name)
        REGISTRY.retry_later(uid, namespace, name, OTHER_ERROR_RETRY_SECONDS, kind)


def reconcile(body: dict[str, Any], api: KubeApi, settings: OperatorSettings) -> None:
    """Reconcile whichever kind `body` is (the background loop retries every kind)."""
    if body.get("kind") == "LLMDeployment":
        _handle_failures("LLMDeployment", body, lambda: _reconcile_deployment(body, api, settings))
    elif body.get("kind") == "LLMTuningJob":
        _handle_failures(
            "LLMTuningJob", body, lambda: reconcile_tuning_job(body, api, settings, REGISTRY)
        )
    else:
        _handle_failures(
            "LLMTrainingJob", body, lambda: reconcile_training_job(body, api, settings, REGISTRY)
        )


def _reconcile_deployment(body: dict[str, Any], api: KubeApi, settings: OperatorSettings) -> None:
    meta = body["metadata"]
    model = (body.get("spec") or {}).get("model") or {}
    sources = [model, *(model.get("adapters") or [])]
    jobs = frozenset(
        job_key(
            str(source["trainingJobRef"].get("kind") or "LLMTrainingJob"),
            str(source["trainingJobRef"]["name"]),
        )
        for source in sources
        if isinstance(source, dict) and (source.get("trainingJobRef") or {}).get("name")
    )
    autoscaled = bool(((body.get("spec") or {}).get("autoscaling") or {}).get("enabled"))
    DEPLOYMENT_REGISTRY.observe(meta["namespace"], meta["name"], jobs, autoscaled)
    reconcile_deployment(body, api, settings)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """`memo.settings` is what `python -m llmkube.operator` read from the environment."""
    settings.posting.level = logging.WARNING
    # Handler threads mostly wait on the apiserver, so more of them keep more requests in flight.
    settings.execution.max_workers = 32
    memo.api = KubeApi.from_environment()
    serve(memo.settings.metrics_port)
    memo.background = BackgroundLoop(
        memo.api,
        memo.settings,
        REGISTRY,
        lambda body: reconcile(body, memo.api, memo.settings),
        DEPLOYMENT_REGISTRY,
    )
    memo.background.start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.background.stop()


@kopf.on.event(*contract.TRAINING_JOBS)
def training_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _job_event("LLMTrainingJob", type, body, memo)


@kopf.on.event(*contract.TUNING_JOBS)
def tuning_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        forget_search(body["metadata"]["namespace"], body["metadata"]["name"])
    _job_event("LLMTuningJob", type, body, memo)


def _job_event(kind: str, type: str | None, body: kopf.Body, memo: kopf.Memo) -> None:
    """Either kind of job that publishes a model a deployment may serve."""
    meta = body["metadata"]
    key = job_key(kind, meta["name"])
    if type == "DELETED":
        REGISTRY.forget(meta["uid"])
        DEPLOYMENT_REGISTRY.forget_job(meta["namespace"], key)
        return
    if meta.get("deletionTimestamp"):
        return  # going away (with its namespace, say): nothing to create for it
    status = body.get("status") or {}
    published = (
        status.get("phase"),
        status.get("completionTime"),
        (status.get("model") or {}).get("uri"),
    )
    if DEPLOYMENT_REGISTRY.job_changed(meta["namespace"], key, published):
        # The handoff signal: the job succeeded, published again, or stopped being Succeeded.
        for deployment in DEPLOYMENT_REGISTRY.following(meta["namespace"], key):
            fresh = memo.api.get(DEPLOYMENTS, meta["namespace"], deployment)
            if fresh is not None:
                reconcile(fresh, memo.api, memo.settings)
    # None is the initial listing (an operator restart), ADDED a new object: always reconcile.
    if type == "MODIFIED" and status.get("observedGeneration") == meta.get("generation"):
        return
    reconcile(dict(body), memo.api, memo.settings)


@kopf.on.event(*contract.DEPLOYMENTS)
def deployment_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    if type == "DELETED":
        DEPLOYMENT_REGISTRY.forget(meta["namespace"], meta["name"])
        DEPLOYMENT_PHASE_COUNTS.set(meta["uid"], None)
        forget_replicas(meta["namespace"], meta["name"])
        return
    if meta.get("deletionTimestamp"):
        return
    status = body.get("status") or {}
    if type == "MODIFIED" and status.get("observedGeneration") == meta.get("generation"):
        return
    reconcile(dict(body), memo.api, memo.settings)


@kopf.on.event(*contract.RAYSERVICES, labels={DEPLOYMENT_LABEL: kopf.PRESENT})
def rayservice_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    owners = body.get("metadata", {}).get("ownerReferences") or []
    owner = next((ref["name"] for ref in owners if ref.get("kind") == "LLMDeployment"), None)
    if owner is None or namespace is None or type == "DELETED" or not body.get("status"):
        return
    DEPLOYMENT_REGISTRY.cluster_starting(namespace, owner, starting_cluster(dict(body)) is not None)
    refresh_deployment_status(memo.api, namespace, owner, dict(body))


def _owner(child: kopf.Body, kind: str) -> str | None:
    """The name of the `kind` that owns `child`. The label only selects; the ownerReference
    carries the full (possibly > 63 characters) name."""
    owners = child.get("metadata", {}).get("ownerReferences") or []
    return next((ref["name"] for ref in owners if ref.get("kind") == kind), None)


@kopf.on.event(*contract.RAYJOBS, labels={TUNING_JOB_LABEL: kopf.PRESENT})
def tuning_rayjob_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    owner = _owner(body, "LLMTuningJob")
    status = body.get("status")
    if owner is None or namespace is None or type == "DELETED" or not status:
        return
    refresh_tuning_status(
        memo.api,
        namespace,
        owner,
        memo.settings,
        REGISTRY,
        rayjob=dict(body),
        read_progress=status.get("jobDeploymentStatus") in PROGRESS_STATES,
    )


@kopf.on.event(*contract.RAYJOBS, labels={TRAINING_JOB_LABEL: kopf.PRESENT})
def rayjob_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    owner = _owner(body, "LLMTrainingJob")
    status = body.get("status")
    uid = body["metadata"]["uid"]
    if type == "DELETED":
        REGISTRY.record_followed(uid, None)
    if owner is None or namespace is None or type == "DELETED" or not status:
        return  # a status-less RayJob was just created by a reconcile that reported it
    state = followed_state(dict(body))
    if REGISTRY.followed_unchanged(uid, state):
        return  # KubeRay rewrote only what the job's status does not show
    refresh_training_status(
        memo.api,
        namespace,
        owner,
        memo.settings,
        REGISTRY,
        rayjob=dict(body),
        read_progress=status.get("jobDeploymentStatus") in PROGRESS_STATES,
    )
    REGISTRY.record_followed(uid, state)
