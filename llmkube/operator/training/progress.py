"""Reading a running job's progress.json and metrics.jsonl, and the version it published, from
object storage."""

import json
from collections.abc import Mapping

from pydantic import ValidationError

from llmkube.api import LLMTrainingJob
from llmkube.api.artifacts import METRICS_FILE, PROGRESS_FILE, MetricsRecord, ProgressRecord
from llmkube.api.runconfig import training_run_config
from llmkube.api.training import TrainingMetrics
from llmkube.operator.quick_store import quick_store
from llmkube.operator.training.status import ProgressSnapshot
from llmkube.storage import NotFoundError
from llmkube.storage.uri import join
from llmkube.storage.versions import BadPointerError, read_pointer

# metrics.jsonl grows for the whole run; only its end holds the latest numbers.
METRICS_TAIL_BYTES = 64 * 1024


def complete_lines(tail: bytes, truncated: bool) -> str:
    """The text of a file's tail, without the partial first line a truncated tail starts with."""
    text = tail.decode("utf-8", "replace")
    if not truncated:
        return text
    _, _, after_first_newline = text.partition("\n")
    return after_first_newline


def latest_metrics(lines: str) -> TrainingMetrics | None:
    """The newest train and eval numbers in a metrics.jsonl (bad lines are skipped)."""
    train: MetricsRecord | None = None
    evaluation: MetricsRecord | None = None
    for line in lines.splitlines():
        try:
            record = MetricsRecord.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            continue
        if record.kind == "eval":
            evaluation = record
        elif record.kind == "train":
            train = record
    if train is None and evaluation is None:
        return None
    return TrainingMetrics(
        train_loss=train.train_loss if train else None,
        tokens_per_second=train.tokens_per_second if train else None,
        eval_loss=evaluation.eval_loss if evaluation else None,
        perplexity=evaluation.perplexity if evaluation else None,
        accuracy=evaluation.accuracy if evaluation else None,
    )


def read_snapshot(
    job: LLMTrainingJob, credentials: Mapping[str, str], default_endpoint: str | None
) -> ProgressSnapshot:
    """Raises StorageError when storage cannot be read (not when nothing is written yet)."""
    run_config = training_run_config(job, default_endpoint=default_endpoint)
    store = quick_store(run_config.output, run_config.storage, credentials)
    try:
        progress: ProgressRecord | None = ProgressRecord.model_validate_json(
            store.read_bytes(join(run_config.output, PROGRESS_FILE))
        )
    except NotFoundError:
        progress = None
    except ValidationError:
        progress = None  # half-written by an old runtime or edited by hand; try next time
    try:
        metrics_uri = join(run_config.output, METRICS_FILE)
        tail, truncated = store.read_tail(metrics_uri, METRICS_TAIL_BYTES)
        metrics = latest_metrics(complete_lines(tail, truncated))
    except NotFoundError:
        metrics = None
    try:
        published = read_pointer(store, run_config.output)
    except BadPointerError:
        published = None  # the runtime says what is wrong with it
    return ProgressSnapshot(progress=progress, metrics=metrics, published=published)
