"""Kopf handlers: parse, call a reconcile function, map its errors to Kopf's retry semantics."""

import logging
from typing import Any

import kopf

from llmkube.operator.kube import ApiError, KubeApi
from llmkube.operator.metrics import TRAINING_JOB_PHASES, observe_reconcile, serve
from llmkube.operator.naming import MANAGED_BY, TRAINING_JOB_LABEL
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.status_writer import EventSink
from llmkube.operator.training import (
    InvalidSpecError,
    MissingSecretError,
    reconcile_training_job,
    refresh_training_status,
)

TRAINING = ("llmkube.io", "v1alpha1", "llmtrainingjobs")
RAYJOBS = ("ray.io", "v1", "rayjobs")
SETTINGS = OperatorSettings.from_env()
# Retry delays: a missing Secret is usually being created right now; apiserver hiccups pass.
MISSING_SECRET_RETRY_SECONDS = 10
TRANSIENT_RETRY_SECONDS = 5


def events_for(body: Any) -> EventSink:
    def post(*, type: str, reason: str, message: str) -> None:
        kopf.event(body, type=type, reason=reason, message=message)

    return post


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Status is ours (its schema prunes unknown fields); Kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmkube.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="llmkube.io", key="last-handled-configuration"
    )
    settings.posting.reporting_component = "llmkube-operator"
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 16
    memo.api = KubeApi.from_environment()
    serve(SETTINGS.metrics_port)


@kopf.on.resume(*TRAINING)
@kopf.on.create(*TRAINING)
@kopf.on.update(*TRAINING, field="spec")
def reconcile_training(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    with observe_reconcile("LLMTrainingJob"):
        try:
            reconcile_training_job(dict(body), memo.api, SETTINGS, events_for(body))
        except InvalidSpecError as error:
            raise kopf.PermanentError(f"invalid spec: {error}") from None
        except MissingSecretError as error:
            raise kopf.TemporaryError(str(error), delay=MISSING_SECRET_RETRY_SECONDS) from None
        except ApiError as error:
            if not error.transient:
                raise
            raise kopf.TemporaryError(str(error), delay=TRANSIENT_RETRY_SECONDS) from None


@kopf.on.delete(*TRAINING, optional=True)
def forget_training(uid: str, **_: Any) -> None:
    TRAINING_JOB_PHASES.set(uid, None)


@kopf.on.event(*RAYJOBS, labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def rayjob_changed(
    body: kopf.Body, type: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    owner = body.get("metadata", {}).get("labels", {}).get(TRAINING_JOB_LABEL)
    if owner is None or namespace is None or type == "DELETED":
        return
    if not body.get("status"):
        return  # just created: the reconcile that created it has reported this state
    deployment_status = body["status"].get("jobDeploymentStatus", "")
    refresh_training_status(
        memo.api,
        namespace,
        owner,
        SETTINGS,
        events_for(_owner_body(namespace, owner, body)),
        read_progress=deployment_status in ("Running", "Retrying", "Complete", "Failed"),
    )


@kopf.timer(
    *TRAINING,
    interval=SETTINGS.progress_interval_seconds,
    when=lambda status, **_: status.get("phase") == "Running",
)
def poll_progress(
    body: kopf.Body, name: str, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    if namespace is None:
        return
    refresh_training_status(
        memo.api, namespace, name, SETTINGS, events_for(body), read_progress=True
    )


def _owner_body(namespace: str, name: str, child: kopf.Body) -> dict[str, Any]:
    """Enough of the owner for an Event's involvedObject, from the child's ownerReference."""
    owners = child.get("metadata", {}).get("ownerReferences") or []
    uid = next((ref.get("uid") for ref in owners if ref.get("kind") == "LLMTrainingJob"), None)
    return {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    }
