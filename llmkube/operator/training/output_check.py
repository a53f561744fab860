"""Before a training job's Ray cluster exists: does its output already hold a model that another
run published? The runtime would refuse such a run too; checked here, it is refused with a
status that says why, before anything starts."""

from collections.abc import Mapping

from llmkube.api import LLMTrainingJob
from llmkube.api.run_identity import output_in_use
from llmkube.api.runconfig import training_run_config
from llmkube.operator.blocked import InvalidSpecError
from llmkube.operator.quick_store import quick_store
from llmkube.storage import StorageError
from llmkube.storage.outputs import published_here


class OutputInUseError(InvalidSpecError):
    """The spec names an output holding another run's model: only a spec change helps."""

    phase, reason = "Failed", "OutputInUse"


def output_problem(
    job: LLMTrainingJob, credentials: Mapping[str, str], default_endpoint: str | None
) -> str | None:
    """Why the job may not run on its output; None when it may (restartPolicy restart, or
    storage that cannot be read now: the runtime checks again)."""
    config = training_run_config(job, default_endpoint=default_endpoint)
    if config.restart_policy == "restart":
        return None
    try:
        published = published_here(quick_store(config.output, config.storage, credentials), config)
    except StorageError:
        return None
    if published is None or not published.changes:
        return None
    return output_in_use(config.output, published.changes)
