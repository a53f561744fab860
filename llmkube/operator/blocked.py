"""What a reconcile of either kind does when it cannot go on: report why in the status (phase,
message, a Ready=False condition with a reason a human can act on) and stop with an error that
tells the handlers whether to retry. Also the refreshes' way of reading an object: skip it when
it is gone or invalid (its reconcile reports that)."""

from collections.abc import Callable
from typing import Any, ClassVar, NoReturn, TypeVar

from pydantic import ValidationError

from llmkube.api import (
    LLMDeployment,
    LLMDeploymentStatus,
    LLMTrainingJob,
    LLMTrainingJobStatus,
    LLMTuningJob,
    LLMTuningJobStatus,
)
from llmkube.api.base import CLUSTER
from llmkube.api.errors import describe
from llmkube.operator.conditions import set_condition
from llmkube.operator.kube import KubeApi, Resource

Status = TypeVar("Status", LLMTrainingJobStatus, LLMDeploymentStatus, LLMTuningJobStatus)
Spec = TypeVar("Spec", LLMTrainingJob, LLMDeployment, LLMTuningJob)


class BlockedError(Exception):
    """The reconcile stopped; the status says why."""

    phase: ClassVar[str]
    reason: ClassVar[str]


class InvalidSpecError(BlockedError):
    """The spec fails validation; retrying cannot help until the user changes it."""

    phase, reason = "Failed", "InvalidSpec"


class MissingSecretError(BlockedError):
    """A referenced Secret (or key in it) does not exist yet; retry until it does."""

    phase, reason = "Pending", "MissingSecret"


def blocked_status(
    current: Status,
    *,
    phase: str,
    reason: str,
    message: str,
    generation: int | None,
    now: str,
) -> Status:
    """The status of an object that cannot start: invalid spec, missing Secret."""
    status = current.model_copy(
        deep=True,
        update={"phase": phase, "observed_generation": generation, "message": message},
    )
    status.conditions = set_condition(
        status.conditions,
        type="Ready",
        status="False",
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    return status


def block(
    error: BlockedError,
    current: Status,
    write: Callable[[Status], object],
    *,
    generation: int | None,
    now: str,
) -> NoReturn:
    """Write the blocked status for `error`, then raise it."""
    status = blocked_status(
        current,
        phase=error.phase,
        reason=error.reason,
        message=str(error),
        generation=generation,
        now=now,
    )
    write(status)
    raise error


def parsed(body: dict[str, Any], kind: type[Spec]) -> tuple[Spec | None, str | None]:
    """(the body as a `kind`, None), or (None, what is wrong with it) for an invalid spec."""
    try:
        return kind.model_validate(body, context=CLUSTER), None
    except ValidationError as error:
        return None, "invalid spec: " + "; ".join(describe(error))


def fetch_valid(
    api: KubeApi, resource: Resource, kind: type[Spec], namespace: str, name: str
) -> tuple[dict[str, Any], Spec] | None:
    """The stored object and its parsed spec, or None when it is gone or invalid."""
    body = api.get(resource, namespace, name)
    if body is None:
        return None
    try:
        return body, kind.model_validate(body, context=CLUSTER)
    except ValidationError:
        return None
