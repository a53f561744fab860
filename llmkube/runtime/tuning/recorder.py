"""What a search tells the world while it runs: `<output>/trials.jsonl` (one record per trial),
`<output>/progress.json` (counts and the best trial, which the operator turns into status), a
log line whenever a trial changes state; and the failure budget that ends a search once more
trials failed than trials.maxFailed allows."""

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from llmkube.api.artifacts import EVAL_FILE, MODEL_DIR, PROGRESS_FILE
from llmkube.api.runconfig import TuningRunConfig, trial_output
from llmkube.api.training import PublishedModel
from llmkube.api.tuning import (
    EVALUATION_KEYS,
    STEP_KEY,
    TOTAL_STEPS_KEY,
    TRIALS_FILE,
    BestTrial,
    TrialCounts,
    TrialRecord,
    TuningProgress,
)
from llmkube.runtime.tuning.trial import trial_name
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import read_pointer, resolve_model

log = logging.getLogger("llmkube.tune")

FLUSH_SECONDS = 2.0
ERROR_CHARS = 500


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def error_line(trace: str | None) -> str:
    """The line of a trial's traceback that says what went wrong: its last."""
    lines = [line.strip() for line in (trace or "").splitlines() if line.strip()]
    return (lines[-1] if lines else "the trial failed")[:ERROR_CHARS]


def _error_text(trial: Trial) -> str:
    """The trial's error as Tune wrote it on this machine when the trial failed (its copy in
    the experiment's storage comes later)."""
    path = trial.error_file
    if path is not None and Path(path).exists():
        return Path(path).read_text(errors="replace")
    return str(trial.get_error() or "")


def best_of(records: list[TrialRecord], mode: str) -> TrialRecord | None:
    finished = [r for r in records if r.state == "succeeded" and r.metric is not None]
    if not finished:
        return None
    pick = min if mode == "min" else max
    return pick(finished, key=lambda r: r.metric if r.metric is not None else 0.0)


def progress(
    config: TuningRunConfig,
    total: int,
    records: list[TrialRecord],
    *,
    finished: bool = False,
    failure: str | None = None,
    model: PublishedModel | None = None,
) -> TuningProgress:
    """progress.json for these trial records."""
    counts = TrialCounts(
        total=max(total, len(records)),
        running=sum(r.state == "running" for r in records),
        succeeded=sum(r.state == "succeeded" for r in records),
        stopped_early=sum(r.state == "stopped_early" for r in records),
        failed=sum(r.state == "failed" for r in records),
    )
    best = best_of(records, config.objective.resolved_mode())
    return TuningProgress(
        trials=counts,
        best_trial=(
            BestTrial(
                trial=best.trial,
                params=best.params,
                metric=best.metric,
                step=best.step or 0,
                model_uri=best.model_uri,
            )
            if best is not None and best.metric is not None
            else None
        ),
        updated_at=_now(),
        finished=finished,
        failure=failure,
        model=model,
    )


def write_progress(store: ObjectStore, config: TuningRunConfig, record: TuningProgress) -> None:
    store.write_bytes(join(config.output, PROGRESS_FILE), record.model_dump_json().encode())


def read_trials(store: ObjectStore, config: TuningRunConfig) -> list[TrialRecord]:
    """The trial records the search wrote last."""
    uri = join(config.output, TRIALS_FILE)
    if not store.exists(uri):
        return []
    text = store.read_bytes(uri).decode()
    return [TrialRecord.model_validate_json(line) for line in text.splitlines() if line]


class SearchRecorder(tune.Callback):
    """Ray Tune calls it on the driver. It is saved with the experiment (and so holds no
    store, whose client could carry credentials): a restored search gets a copy."""

    def __init__(self, config: TuningRunConfig, total: int) -> None:
        self.config = config
        self.total = total
        self.finished: dict[str, TrialRecord] = {}
        """Records of trials that ended, which never change (read from storage once)."""
        self.states: dict[str, str] = {}
        self.failed = 0
        self._store: ObjectStore | None = None
        self._flushed = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_flushed": 0.0}

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(self.config.output, self.config.storage)
        return self._store

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.record(trials)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.record(trials)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self.record(trials)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.record(trials)

    def record(self, trials: list[Trial]) -> list[TrialRecord]:
        records = [self.record_of(trial) for trial in trials]
        for record in records:
            if self.states.get(record.trial) != record.state:
                self.states[record.trial] = record.state
                self._log(record)
        self.failed = sum(r.state == "failed" for r in records)
        lines = "".join(record.model_dump_json() + "\n" for record in records)
        self.store.write_bytes(join(self.config.output, TRIALS_FILE), lines.encode())
        write_progress(self.store, self.config, progress(self.config, self.total, records))
        self._flushed = time.monotonic()
        return records

    def record_of(self, trial: Trial) -> TrialRecord:
        name = trial_name(trial.trial_id)
        if name in self.finished:
            return self.finished[name]
        result = trial.last_result or {}
        record = TrialRecord(
            trial=name,
            state="pending",
            params=dict(trial.config),
            step=result.get(STEP_KEY),
            total_steps=result.get(TOTAL_STEPS_KEY),
            metric=result.get(self.config.objective.metric),
        )
        if trial.status == Trial.RUNNING:
            return record.model_copy(update={"state": "running"})
        if trial.status == Trial.ERROR:
            record = record.model_copy(
                update={"state": "failed", "error": error_line(_error_text(trial))}
            )
        elif trial.status == Trial.TERMINATED:
            record = self._ended(record)
        else:
            return record
        self.finished[name] = record
        return record

    def _ended(self, record: TrialRecord) -> TrialRecord:
        """A trial that ended without an error: succeeded once its model is published (it
        publishes before its last report), else stopped early."""
        output = trial_output(self.config, record.trial)
        if read_pointer(self.store, output) is None:
            return record.model_copy(update={"state": "stopped_early"})
        model = resolve_model(self.store, join(output, MODEL_DIR))
        final = json.loads(self.store.read_bytes(join(model.uri, EVAL_FILE)))
        key = EVALUATION_KEYS[self.config.objective.metric]
        return record.model_copy(
            update={
                "state": "succeeded",
                "step": final["step"],
                "total_steps": final["step"],
                "metric": final[key],
                "model_uri": join(output, MODEL_DIR),
            }
        )

    def _log(self, record: TrialRecord) -> None:
        metric = self.config.objective.metric
        detail = {
            "running": "",
            "pending": "",
            "succeeded": f" at step {record.step}: {metric} {record.metric}",
            "stopped_early": f" at step {record.step} ({metric} {record.metric})",
            "failed": f": {record.error}",
        }[record.state]
        log.info("trial %s %s%s", record.trial, record.state.replace("_", " "), detail)


class FailureBudget(tune.Stopper):
    """Ends the search once more trials failed than trials.maxFailed allows."""

    def __init__(self, recorder: SearchRecorder, max_failed: int) -> None:
        self.recorder = recorder
        self.max_failed = max_failed

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.recorder.failed > self.max_failed
