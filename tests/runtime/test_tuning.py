"""Hyperparameter searches on real MinIO and a local Ray cluster: `llmkube.runtime.tune` as a
subprocess, as the RayJob (and `llmkube run`) start it."""

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from llmkube.api import LLMTuningJob
from llmkube.api.artifacts import (
    EVAL_FILE,
    METRICS_FILE,
    MODEL_DIR,
    PROGRESS_FILE,
    model_pointer_uri,
)
from llmkube.api.runconfig import TuningRunConfig, tuning_run_config
from llmkube.api.tuning import TRIALS_FILE, TUNING_CONFIG_FILE, TrialRecord, TuningProgress
from llmkube.console.app import create_app
from llmkube.console.local_source import LocalSource
from llmkube.console.searches import by_objective
from llmkube.console.server import ConsoleServer
from llmkube.runtime.artifact import load_artifact
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import resolve_model
from llmkube.testing.browser import chromium, page_errors, screenshot
from llmkube.testing.minio import MinioServer
from llmkube.testing.processes import stop_by_signal, wait_until
from llmkube.testing.training import TuningProcess
from tests.runtime.training_helpers import corpus, upload

SEARCH_TIMEOUT = 600.0
ENDED = ("succeeded", "stopped_early", "failed")


@pytest.fixture
def dataset(minio: MinioServer, bucket: str) -> str:
    upload(minio, bucket, "data/topics.txt", corpus().encode())
    return f"s3://{bucket}/data/"


def search(minio: MinioServer, bucket: str, dataset: str, **spec: Any) -> TuningRunConfig:
    """A search over a tiny GPT (about 1 M parameters): 40 steps a trial, evaluated every 10."""
    job = LLMTuningJob.model_validate(
        {
            "metadata": {"name": "sweep"},
            "spec": {
                "template": {
                    "model": {"preset": "tiny"},
                    "tokenizer": {"type": "byte"},
                    "dataset": {"source": dataset},
                    "storage": {"endpoint": minio.endpoint, "insecure": True},
                    "training": {"maxSteps": 40, "batchSize": 8, "learningRate": 3e-3},
                    "evaluation": {"interval": 10, "batches": 4},
                    "checkpoint": {"interval": 20},
                    "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 1},
                    "output": f"s3://{bucket}/sweep/",
                },
                **spec,
            },
        }
    )
    return tuning_run_config(job)


def trials(store: ObjectStore, config: TuningRunConfig) -> list[TrialRecord]:
    uri = join(config.output, TRIALS_FILE)
    if not store.exists(uri):
        return []
    lines = store.read_bytes(uri).decode().splitlines()
    return [TrialRecord.model_validate_json(line) for line in lines]


def finished(store: ObjectStore, config: TuningRunConfig) -> TuningProgress:
    return TuningProgress.model_validate_json(store.read_bytes(join(config.output, PROGRESS_FILE)))


def test_a_search_stops_poor_trials_survives_a_restart_and_publishes_the_best(
    minio: MinioServer, bucket: str, dataset: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = search(
        minio,
        bucket,
        dataset,
        searchSpace={"training.learningRate": {"type": "loguniform", "min": 1e-5, "max": 3e-2}},
        earlyStopping={"type": "asha", "gracePeriod": 10, "reductionFactor": 2},
        trials={"max": 6, "parallel": 2},
        seed=3,
    )
    store = open_store(config.output, config.storage, environ=minio.env)
    with TuningProcess(config, tmp_path, minio.env) as first:
        wait_until(
            lambda: (
                sum(r.state in ENDED for r in trials(store, config)) >= 2
                and any(r.state == "running" for r in trials(store, config))
            ),
            timeout=SEARCH_TIMEOUT,
            what="two trials ended and one running",
            interval=1.0,
        )
        assert stop_by_signal(first, signal.SIGTERM) == 128 + signal.SIGTERM, first.log
    assert "stopped by SIGTERM; the same command resumes the search" in first.log
    before = {r.trial: r for r in trials(store, config) if r.state in ENDED}
    ended = {
        name: store.read_bytes(join(config.output, "trials", name, METRICS_FILE)) for name in before
    }
    published = {
        name: store.read_bytes(model_pointer_uri(record.model_uri.removesuffix("/model")))
        for name, record in before.items()
        if record.model_uri is not None
    }

    with TuningProcess(config, tmp_path, minio.env) as second:
        assert second.wait(SEARCH_TIMEOUT) == 0, second.log[-4000:]
    assert "resuming the search saved at" in second.log
    records = {r.trial: r for r in trials(store, config)}
    assert len(records) == 6
    for name, record in before.items():
        assert records[name] == record, "a trial that ended before the restart is kept as it was"
        assert store.read_bytes(join(config.output, "trials", name, METRICS_FILE)) == ended[name], (
            f"trial {name} ran again after the restart"
        )
    for name, pointer in published.items():
        assert store.read_bytes(join(config.output, "trials", name, MODEL_DIR, "current.json")) == (
            pointer
        )

    progress = finished(store, config)
    assert progress.finished
    assert progress.failure is None
    counts = progress.trials
    assert (counts.total, counts.running, counts.failed) == (6, 0, 0)
    assert counts.succeeded + counts.stopped_early == 6
    assert counts.stopped_early >= 1, "ASHA stopped no trial"
    stopped = [r for r in records.values() if r.state == "stopped_early"]
    assert all(r.step is not None and r.step < 40 for r in stopped)
    succeeded = [r for r in records.values() if r.state == "succeeded"]
    best = min(succeeded, key=lambda r: r.metric or float("inf"))
    assert progress.best_trial is not None
    assert progress.best_trial.trial == best.trial
    assert progress.best_trial.metric == best.metric
    assert progress.best_trial.params == best.params
    assert progress.best_trial.step == 40
    best_eval = json.loads(
        store.read_bytes(
            join(
                resolve_model(store, join(config.output, "trials", best.trial, MODEL_DIR)).uri,
                EVAL_FILE,
            )
        )
    )
    assert best_eval["eval_loss"] == best.metric

    # The best trial's model is the search's: same version, and it loads.
    assert progress.model is not None
    model = resolve_model(store, join(config.output, MODEL_DIR))
    trial_model = resolve_model(store, join(config.output, "trials", best.trial, MODEL_DIR))
    assert model.version == trial_model.version == progress.model.version
    artifact = load_artifact(store, model.uri)
    assert artifact.config.n_layer >= 1
    assert "best trial" in second.log
    for variable, value in minio.env.items():  # the console reads the search's output with them
        monkeypatch.setenv(variable, value)
    the_console_shows_the_trials_best_first(config, list(records.values()), tmp_path)


def the_console_shows_the_trials_best_first(
    config: TuningRunConfig,
    records: list[TrialRecord],
    tmp_path: Path,
) -> None:
    """The search's page in Chromium, over the folder `llmkube run` would have written."""
    data_dir = tmp_path / "data"
    workdir = data_dir / "tuning" / config.job.name
    workdir.mkdir(parents=True)
    (workdir / TUNING_CONFIG_FILE).write_text(config.model_dump_json(by_alias=True))
    server = ConsoleServer(create_app(LocalSource(data_dir)), port=0).start()
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = page_errors(page)
            page.goto(f"{server.url}/searches")
            page.click(f'a[href="/searches/local/{config.job.name}"]')
            page.wait_for_selector("#trials tbody tr[data-trial]")
            shown = page.eval_on_selector_all(
                "#trials tbody tr", "rows => rows.map(r => [r.dataset.trial, r.dataset.state])"
            )
            screenshot(page, "console-search")
            assert errors == []
    finally:
        server.stop()
    expected = by_objective(records, "min")
    assert shown == [[r.trial, r.state] for r in expected]
    assert shown[0][1] == "succeeded"


def test_a_failing_trial_is_counted_and_the_search_goes_on_until_too_many_fail(
    minio: MinioServer, bucket: str, dataset: str, tmp_path: Path
) -> None:
    missing = f"s3://{bucket}/no-such-data/"
    config = search(
        minio,
        bucket,
        dataset,
        searchSpace={"dataset.source": {"type": "choice", "values": [dataset, missing, missing]}},
        algorithm="grid",
        trials={"max": 3, "parallel": 1, "maxFailed": 1},
    )
    store = open_store(config.output, config.storage, environ=minio.env)
    with TuningProcess(config, tmp_path, minio.env) as run:
        assert run.wait(SEARCH_TIMEOUT) == 1, run.log[-4000:]
    records = trials(store, config)
    assert [r.state for r in records] == ["succeeded", "failed", "failed"]
    assert all("no-such-data" in (r.error or "") for r in records[1:]), records
    progress = finished(store, config)
    assert progress.trials.failed == 2
    assert progress.failure is not None
    assert "2 trial(s) failed, more than trials.maxFailed (1)" in progress.failure
    assert progress.model is None
    assert not store.exists(model_pointer_uri(config.output)), "a failed search publishes nothing"
    assert "the search failed: 2 trial(s) failed" in run.log

    # The same output for another search: refused at once, naming what differs.
    other = config.model_copy(update={"seed": 9})
    with TuningProcess(other, tmp_path / "other", minio.env) as refused:
        assert refused.wait(120) == 2, refused.log[-4000:]
    assert "holds a search started with other settings (seed: 0 -> 9)" in refused.log
