"""Hyperparameter searches in the console: each search's trials, read from its output's
trials.jsonl and progress.json (`docs/tuning.md`), ordered by the objective."""

from dataclasses import dataclass, field

from pydantic import ValidationError

from llmkube.api.artifacts import PROGRESS_FILE
from llmkube.api.runconfig import TuningRunConfig
from llmkube.api.tuning import TRIALS_FILE, TrialRecord, TuningProgress
from llmkube.storage import ObjectStore, StorageError
from llmkube.storage.uri import join

STATE_ORDER = {"succeeded": 0, "stopped_early": 1, "running": 2, "pending": 3, "failed": 4}


@dataclass(frozen=True)
class SearchRow:
    """One line of the searches page."""

    name: str
    namespace: str
    phase: str
    metric: str
    mode: str
    ended: int = 0
    total: int = 0
    running: int = 0
    best_trial: str | None = None
    best_metric: float | None = None


@dataclass(frozen=True)
class SearchDetail:
    row: SearchRow
    output: str
    model_uri: str | None
    trials: list[TrialRecord] = field(default_factory=list)
    """Best first: finished trials by the objective, then running, pending and failed ones."""
    parameters: list[str] = field(default_factory=list)
    """The searched field paths, the table's columns."""
    message: str = ""


def by_objective(records: list[TrialRecord], mode: str) -> list[TrialRecord]:
    sign = 1.0 if mode == "min" else -1.0

    def key(record: TrialRecord) -> tuple[int, float]:
        metric = sign * record.metric if record.metric is not None else float("inf")
        return STATE_ORDER[record.state], metric

    return sorted(records, key=key)


@dataclass(frozen=True)
class SearchOutput:
    progress: TuningProgress | None
    trials: list[TrialRecord]
    error: str | None = None


def read_search_output(store: ObjectStore, output: str) -> SearchOutput:
    """What a search wrote so far; an unreadable storage is reported, not raised."""
    try:
        progress = None
        if store.exists(join(output, PROGRESS_FILE)):
            progress = TuningProgress.model_validate_json(
                store.read_bytes(join(output, PROGRESS_FILE))
            )
        trials = []
        if store.exists(join(output, TRIALS_FILE)):
            text = store.read_bytes(join(output, TRIALS_FILE)).decode()
            trials = [TrialRecord.model_validate_json(line) for line in text.splitlines() if line]
    except (StorageError, ValidationError) as error:
        return SearchOutput(None, [], error=str(error))
    return SearchOutput(progress, trials)


def search_detail(
    row: SearchRow, config: TuningRunConfig, found: SearchOutput, message: str = ""
) -> SearchDetail:
    model = found.progress.model if found.progress is not None else None
    return SearchDetail(
        row=row,
        output=config.output,
        model_uri=model.uri if model is not None else None,
        trials=by_objective(found.trials, config.objective.resolved_mode()),
        parameters=sorted(config.search_space),
        message=found.error or message,
    )


def search_row(
    name: str, namespace: str, phase: str, config: TuningRunConfig, progress: TuningProgress | None
) -> SearchRow:
    counts = progress.trials if progress is not None else None
    best = progress.best_trial if progress is not None else None
    return SearchRow(
        name=name,
        namespace=namespace,
        phase=phase,
        metric=config.objective.metric,
        mode=config.objective.resolved_mode(),
        ended=(counts.succeeded + counts.stopped_early + counts.failed) if counts else 0,
        total=counts.total if counts else config.trials.max,
        running=counts.running if counts else 0,
        best_trial=best.trial if best else None,
        best_metric=best.metric if best else None,
    )
