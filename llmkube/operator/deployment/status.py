"""Pure status mapping for LLMDeployment: model resolution + RayService state -> status."""

from dataclasses import dataclass
from typing import Any

from llmkube.api import LLMDeployment, LLMDeploymentStatus
from llmkube.api.contract import SERVE_APP
from llmkube.api.deployment import DeploymentPhase, ServedModel
from llmkube.operator.conditions import ConditionStatus, find, set_condition
from llmkube.operator.deployment.adapters import AdapterChoice
from llmkube.operator.deployment.builders import endpoint, selector
from llmkube.operator.kueue import queued_message


@dataclass(frozen=True)
class ModelChoice:
    """What to serve, or why there is nothing to serve yet."""

    served: ServedModel | None
    waiting_reason: str | None = None
    waiting_message: str | None = None


def _condition(
    status: LLMDeploymentStatus,
    type_: str,
    state: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> None:
    status.conditions = set_condition(
        status.conditions,
        type=type_,
        status=state,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )


def _rayservice_condition(rayservice: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (rayservice.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def _adapters(
    status: LLMDeploymentStatus, adapters: AdapterChoice, generation: int | None, now: str
) -> None:
    listed = any(c.type == "AdaptersReady" for c in status.conditions)
    status.adapters = adapters.statuses
    if not adapters.statuses and not listed:
        return
    refused = [a for a in adapters.statuses if a.state == "Refused"]
    waiting = [a for a in adapters.statuses if a.state == "Waiting"]
    state: ConditionStatus
    if refused:
        state, reason = "False", "AdapterRefused"
        message = "; ".join(f"{a.name}: {a.message}" for a in refused)
    elif waiting:
        state, reason = "False", "AdapterWaiting"
        message = "; ".join(f"{a.name}: {a.message}" for a in waiting)
    elif adapters.statuses:
        state, reason = "True", "AdaptersReady"
        message = "serving " + ", ".join(a.name for a in adapters.statuses)
    else:
        state, reason, message = "True", "NoAdapters", "spec.model.adapters is empty"
    _condition(status, "AdaptersReady", state, reason, message, generation, now)


def deployment_status(
    current: LLMDeploymentStatus,
    deployment: LLMDeployment,
    *,
    choice: ModelChoice,
    rayservice_name: str,
    rayservice: dict[str, Any] | None,
    live_version: str | None = None,
    adapters: AdapterChoice | None = None,
    unschedulable: str | None = None,
    now: str,
) -> LLMDeploymentStatus:
    """`live_version`: the model version annotation of the RayService's active RayCluster;
    `adapters`: what became of spec.model.adapters (None: as last reported); `unschedulable`:
    why the starting cluster's pods wait on the scheduler (llmkube.operator.scheduling)."""
    generation = deployment.metadata.generation
    status = current.model_copy(deep=True)
    status.observed_generation = generation
    status.desired_replicas = deployment.spec.replicas
    status.selector = selector(deployment)
    if adapters is not None:
        _adapters(status, adapters, generation, now)

    if rayservice is None:
        # Nothing deployed yet: we are waiting for the model.
        status.phase = "WaitingForModel"
        status.message = choice.waiting_message
        status.waiting_for = None
        status.replicas = 0
        status.ready_replicas = 0
        _condition(
            status,
            "ModelAvailable",
            "False",
            choice.waiting_reason or "WaitingForModel",
            choice.waiting_message or "",
            generation,
            now,
        )
        _condition(
            status,
            "Ready",
            "False",
            choice.waiting_reason or "WaitingForModel",
            choice.waiting_message or "",
            generation,
            now,
        )
        return status

    status.ray_service_name = rayservice_name
    status.waiting_for = unschedulable
    status.endpoint = endpoint(deployment)
    status.replicas = deployment.spec.replicas
    observed = rayservice.get("status") or {}
    ready_endpoints = int(observed.get("numServeEndpoints") or 0)
    status.ready_replicas = min(ready_endpoints, deployment.spec.replicas)
    if choice.served is not None:
        status.model = choice.served
    status.live_model_version = live_version

    if choice.waiting_reason is not None:
        _condition(
            status,
            "ModelAvailable",
            "False",
            choice.waiting_reason,
            f"{choice.waiting_message}; still serving the previous model",
            generation,
            now,
        )
    else:
        _condition(
            status,
            "ModelAvailable",
            "True",
            "Resolved",
            f"serving {status.model.uri if status.model else 'the model'}",
            generation,
            now,
        )

    upgrade = _rayservice_condition(rayservice, "UpgradeInProgress")
    upgrading = upgrade is not None and upgrade.get("status") == "True"
    rolling_out = (
        f"rolling out model version {status.model.version if status.model else '?'}; "
        f"{live_version or 'the previous version'} serves until the new Ray cluster is ready"
    )
    if upgrading and unschedulable:
        rolling_out, upgrade_reason = f"{rolling_out}; {unschedulable}", "Unschedulable"
    else:
        upgrade_reason = "RollingOut" if upgrading else "Stable"
    _condition(
        status,
        "UpgradeInProgress",
        "True" if upgrading else "False",
        upgrade_reason,
        rolling_out if upgrading else "no rollout in progress",
        generation,
        now,
    )

    applications = (observed.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
    app = applications.get(SERVE_APP)
    ready = _rayservice_condition(rayservice, "Ready")
    phase: DeploymentPhase
    queued = deployment.spec.scheduling.queue_name is not None
    if queued and (rayservice.get("spec") or {}).get("rayClusterConfig", {}).get("suspend"):
        was_ready = find(current.conditions, "Ready")
        ran_before = current.phase in ("Ready", "Degraded") or (
            was_ready is not None and was_ready.reason == "Preempted"
        )
        reason, message = queued_message(deployment.spec.scheduling, ran_before)
        phase = "Queued"
    elif app is not None and app.get("status") == "DEPLOY_FAILED":
        phase, reason = "Failed", "ServeDeployFailed"
        detail = app.get("message") or "see the RayService"
        message = f"Ray Serve could not deploy the model: {detail}"
    elif ready is not None and ready.get("status") == "True":
        phase, reason, message = "Ready", "Serving", f"serving at {status.endpoint}"
    elif current.phase in ("Ready", "Degraded"):
        phase, reason = "Degraded", "NotServing"
        detail = (ready or {}).get("message") or "no healthy replicas"
        message = f"the RayService stopped serving: {detail}"
    elif unschedulable:
        phase, reason, message = "Deploying", "Unschedulable", unschedulable
    else:
        phase, reason = "Deploying", "Deploying"
        message = "the Ray cluster and Serve app are starting"
    status.phase = phase
    status.message = message
    _condition(
        status, "Ready", "True" if phase == "Ready" else "False", reason, message, generation, now
    )
    return status


def spec_applied(
    status: LLMDeploymentStatus, problem: str | None, generation: int | None, now: str
) -> None:
    """Say that the spec turned invalid while the RayService serves what it was built from
    (`problem`), or clear an earlier such report once the spec is valid again."""
    if problem is not None:
        status.message = (
            f"{status.message or ''}; the spec is now invalid (see SpecApplied)".lstrip("; ")
        )
        _condition(
            status,
            "SpecApplied",
            "False",
            "InvalidSpec",
            f"{problem}. The RayService goes on serving the spec it was built from, and this "
            "status keeps following it; fix the spec, or delete the deployment to stop it.",
            generation,
            now,
        )
    elif find(status.conditions, "SpecApplied") is not None:
        _condition(
            status,
            "SpecApplied",
            "True",
            "Applied",
            "the RayService matches the spec",
            generation,
            now,
        )
