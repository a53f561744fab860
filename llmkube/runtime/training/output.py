"""What a run does with the output it is given, decided before it writes anything: finish at
once, resume, start over, or refuse (`restartPolicy`, docs/training.md)."""

import logging
from dataclasses import dataclass

from llmkube.api.artifacts import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    PROGRESS_FILE,
    ModelPointer,
)
from llmkube.api.run_identity import (
    RUN_CONFIG_FILE,
    output_identity,
    output_in_use,
)
from llmkube.api.runconfig import TrainingRunConfig
from llmkube.runtime.training.checkpoint import CheckpointMismatchError, check_resumable
from llmkube.storage import ObjectStore
from llmkube.storage.outputs import published_here, recorded_run
from llmkube.storage.uri import join

log = logging.getLogger("llmkube.train")


class OutputInUseError(Exception):
    """The output holds a model published by a run with other settings."""


@dataclass(frozen=True)
class OutputPlan:
    published: ModelPointer | None = None
    """Set when a run with these settings already published the model: nothing to do."""
    resume_from: int | None = None
    """The checkpoint step training resumes from (None: from the start)."""


def plan_output(store: ObjectStore, config: TrainingRunConfig) -> OutputPlan:
    """Raises OutputInUseError (another run's model is published there and restartPolicy is
    resume) or CheckpointMismatchError (another run's checkpoints are there, likewise)."""
    published = published_here(store, config)
    if published is not None and not published.changes:
        return OutputPlan(published=published.pointer)
    restart = config.restart_policy == "restart"
    if published is not None and not restart:
        raise OutputInUseError(output_in_use(config.output, published.changes))
    if restart and _started_with_other_settings(store, config):
        start_over(store, config.output)
    try:
        return OutputPlan(resume_from=check_resumable(store, config))
    except CheckpointMismatchError:
        if not restart:
            raise
        start_over(store, config.output)  # checkpoints of a run that recorded no settings
        return OutputPlan()


def _started_with_other_settings(store: ObjectStore, config: TrainingRunConfig) -> bool:
    """Did the last run that started on this output have other settings? A restart that was
    itself interrupted (or whose driver Ray restarted) finds its own and resumes."""
    recorded = recorded_run(store, join(config.output, RUN_CONFIG_FILE))
    return recorded is not None and output_identity(recorded) != output_identity(config)


def start_over(store: ObjectStore, output: str) -> None:
    """Delete what the last run left besides its published models: checkpoints, progress and
    metrics. The prepared-data cache stays (it is keyed by the data and tokenizer)."""
    doomed = store.list(join(output, CHECKPOINTS_DIR) + "/")
    doomed += [join(output, PROGRESS_FILE), join(output, METRICS_FILE)]
    removed = 0
    for uri in doomed:
        if store.exists(uri):
            store.delete(uri)
            removed += 1
    log.info(
        "restartPolicy restart: the output held a run with other settings; deleted its "
        "checkpoints, progress and metrics (%d files); its published versions stay",
        removed,
    )
