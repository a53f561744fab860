"""Reading a search's progress.json and trials.jsonl from object storage."""

from collections.abc import Mapping

from pydantic import ValidationError

from llmkube.api import LLMTuningJob
from llmkube.api.artifacts import PROGRESS_FILE
from llmkube.api.runconfig import tuning_run_config
from llmkube.api.tuning import TRIALS_FILE, TrialRecord, TuningProgress
from llmkube.operator.quick_store import quick_store
from llmkube.storage import NotFoundError
from llmkube.storage.uri import join


def read_search_progress(
    job: LLMTuningJob, credentials: Mapping[str, str], default_endpoint: str | None
) -> TuningProgress | None:
    """None before the search wrote any; raises StorageError when storage cannot be read."""
    config = tuning_run_config(job, default_endpoint=default_endpoint)
    store = quick_store(config.output, config.storage, credentials)
    try:
        return TuningProgress.model_validate_json(
            store.read_bytes(join(config.output, PROGRESS_FILE))
        )
    except NotFoundError:
        return None
    except ValidationError:
        return None  # half-written or edited by hand; read again next time


def read_trial_records(
    job: LLMTuningJob, credentials: Mapping[str, str], default_endpoint: str | None
) -> list[TrialRecord]:
    config = tuning_run_config(job, default_endpoint=default_endpoint)
    store = quick_store(config.output, config.storage, credentials)
    try:
        text = store.read_bytes(join(config.output, TRIALS_FILE)).decode()
    except NotFoundError:
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(TrialRecord.model_validate_json(line))
        except ValidationError:
            continue
    return records
