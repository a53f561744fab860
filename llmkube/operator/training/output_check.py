"""Before a training job's Ray cluster exists: does its output already hold a model that another
run published? The runtime would refuse such a run too; checked here, it is refused with a
status that says why, before anything starts."""

from collections.abc import Mapping

from pydantic import ValidationError

from llmkube.api import LLMTrainingJob
from llmkube.api.artifacts import published_marker
from llmkube.api.run_identity import (
    RUN_CONFIG_FILE,
    identity_changes,
    output_identity,
    output_in_use,
)
from llmkube.api.runconfig import TrainingRunConfig, training_run_config
from llmkube.operator.blocked import InvalidSpecError
from llmkube.operator.quick_store import quick_store
from llmkube.storage import StorageError
from llmkube.storage.uri import join


class OutputInUseError(InvalidSpecError):
    """The spec names an output holding another run's model: only a spec change helps."""

    phase, reason = "Failed", "OutputInUse"


def output_problem(
    job: LLMTrainingJob, credentials: Mapping[str, str], default_endpoint: str | None
) -> str | None:
    """Why the job may not run on its output; None when it may (or when storage cannot be read
    now: the runtime checks again)."""
    config = training_run_config(job, default_endpoint=default_endpoint)
    try:
        store = quick_store(config.output, config.storage, credentials)
        if not store.exists(
            published_marker(config.output, pretrained=config.pretrained is not None)
        ):
            return None
        recorded = store.read_bytes(join(config.output, RUN_CONFIG_FILE))
        previous = TrainingRunConfig.model_validate_json(recorded)
    except (StorageError, ValidationError):
        return None
    changes = identity_changes(output_identity(previous), output_identity(config))
    return output_in_use(config.output, changes) if changes else None
