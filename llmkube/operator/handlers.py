"""Kopf wiring: level-triggered watch handlers that call the reconcile functions.

Each event is handled from the object's current state, not from a diff: a new object, or one
whose spec changed (metadata.generation ahead of status.observedGeneration), is reconciled; every
other event (our own status writes) is skipped at once. Kopf therefore keeps no bookkeeping
annotations and adds no finalizers. Failures a retry can fix are scheduled on the background
loop; an invalid spec waits for the user to change it.
"""

import logging
from typing import Any

import kopf

from llmkube.operator.background import BackgroundLoop
from llmkube.operator.kube import ApiError, KubeApi
from llmkube.operator.metrics import observe_reconcile, serve
from llmkube.operator.naming import TRAINING_JOB_LABEL
from llmkube.operator.registry import JobRegistry
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.training import (
    InvalidSpecError,
    MissingSecretError,
    reconcile_training_job,
    refresh_training_status,
)

log = logging.getLogger(__name__)
TRAINING = ("llmkube.io", "v1alpha1", "llmtrainingjobs")
RAYJOBS = ("ray.io", "v1", "rayjobs")
SETTINGS = OperatorSettings.from_env()
REGISTRY = JobRegistry()
# Retry delays: a missing Secret is usually being created right now; apiserver hiccups pass;
# anything else (RBAC, a rejected object) needs a human, so it is retried slowly.
MISSING_SECRET_RETRY_SECONDS = 10
TRANSIENT_RETRY_SECONDS = 5
OTHER_ERROR_RETRY_SECONDS = 60
# RayJob states in which the runtime writes (or has written) progress files worth reading.
PROGRESS_STATES = ("Running", "Retrying", "Complete", "Failed")


def reconcile(body: dict[str, Any], api: KubeApi) -> None:
    meta = body["metadata"]
    key = (meta["uid"], meta["namespace"], meta["name"])
    try:
        with observe_reconcile("LLMTrainingJob"):
            reconcile_training_job(body, api, SETTINGS, REGISTRY)
    except InvalidSpecError:
        pass  # reported in status; the next spec change reconciles again
    except MissingSecretError:
        REGISTRY.retry_later(*key, MISSING_SECRET_RETRY_SECONDS)
    except ApiError as error:
        log.warning("reconciling %s/%s: %s", key[1], key[2], error)
        delay = TRANSIENT_RETRY_SECONDS if error.transient else OTHER_ERROR_RETRY_SECONDS
        REGISTRY.retry_later(*key, delay)
    except Exception:
        log.exception("reconciling %s/%s failed", key[1], key[2])
        REGISTRY.retry_later(*key, OTHER_ERROR_RETRY_SECONDS)


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    # Handler threads mostly wait on the apiserver, so more of them keep more requests in flight.
    settings.execution.max_workers = 32
    memo.api = KubeApi.from_environment()
    serve(SETTINGS.metrics_port)
    memo.background = BackgroundLoop(
        memo.api, SETTINGS, REGISTRY, lambda body: reconcile(body, memo.api)
    )
    memo.background.start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.background.stop()


@kopf.on.event(*TRAINING)
def training_job_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    if type == "DELETED":
        REGISTRY.forget(meta["uid"])
        return
    status = body.get("status") or {}
    # None is the initial listing (an operator restart), ADDED a new object: always reconcile.
    if type == "MODIFIED" and status.get("observedGeneration") == meta.get("generation"):
        return
    reconcile(dict(body), memo.api)


@kopf.on.event(*RAYJOBS, labels={TRAINING_JOB_LABEL: kopf.PRESENT})
def rayjob_event(
    type: str | None, body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    # The label only selects; the ownerReference carries the full (possibly >63 chars) name.
    owners = body.get("metadata", {}).get("ownerReferences") or []
    owner = next((ref["name"] for ref in owners if ref.get("kind") == "LLMTrainingJob"), None)
    status = body.get("status")
    if owner is None or namespace is None or type == "DELETED" or not status:
        return  # a status-less RayJob was just created by a reconcile that reported it
    refresh_training_status(
        memo.api,
        namespace,
        owner,
        SETTINGS,
        REGISTRY,
        rayjob=dict(body),
        read_progress=status.get("jobDeploymentStatus")
        in ("Running", "Retrying", "Complete", "Failed"),
    )
