"""A checkpoint says what run made it; a run that differs refuses to resume from it, and folders
a crash left half-written are removed first. On real files (the file:// store)."""

from pathlib import Path
from typing import Any

import pytest

from llmkube.api import LLMTrainingJob
from llmkube.api.run_identity import identity_hash, run_identity
from llmkube.api.runconfig import TrainingRunConfig, training_run_config
from llmkube.runtime.training.checkpoint import (
    CheckpointMismatchError,
    CheckpointState,
    check_resumable,
    checkpoint_uri,
    load_state,
    save_checkpoint,
)
from llmkube.storage import open_store


def config(tmp_path: Path, **spec: Any) -> TrainingRunConfig:
    job = LLMTrainingJob.model_validate(
        {
            "metadata": {"name": "resumable"},
            "spec": {
                "model": {"preset": "tiny"},
                "dataset": {"source": f"file://{tmp_path}/data"},
                "training": {"maxSteps": 100},
                "output": f"file://{tmp_path}/out",
                **spec,
            },
        }
    )
    return training_run_config(job)


def checkpoint(run: TrainingRunConfig, step: int, identity: dict[str, Any] | None) -> str:
    uri = checkpoint_uri(run.output, step)
    save_checkpoint(
        open_store("file://"),
        uri,
        weights=b"w",
        optimizer={},
        rng_states=[],
        state=CheckpointState(
            step=step,
            samples=step,
            tokens_seen=step,
            total_steps=100,
            identity=identity,
            identity_hash=identity_hash(identity) if identity else None,
        ),
    )
    return uri


def test_the_same_run_resumes_and_settings_that_may_change_do_not_matter(tmp_path: Path) -> None:
    run = config(tmp_path)
    uri = checkpoint(run, 20, run_identity(run))
    assert load_state(open_store("file://"), uri).identity_hash == identity_hash(run_identity(run))
    longer = config(tmp_path, training={"maxSteps": 400, "learningRate": 0.01, "batchSize": 16})
    assert check_resumable(open_store("file://"), longer) == 20


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"model": {"preset": "small"}}, "model.nLayer: 2 -> 6"),
        ({"model": {"preset": "tiny", "overrides": {"contextLength": 64}}}, "model.contextLength"),
        ({"dataset": {"source": "file:///elsewhere/data"}}, "dataset.source"),
        ({"tokenizer": {"type": "byte"}}, "tokenizer.type: 'bpe' -> 'byte'"),
    ],
)
def test_another_model_or_dataset_refuses_to_resume_and_says_what_differs(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    run = config(tmp_path)
    checkpoint(run, 20, run_identity(run))
    with pytest.raises(CheckpointMismatchError) as refused:
        check_resumable(open_store("file://"), config(tmp_path, **change))
    message = str(refused.value)
    assert says in message
    assert "step 20" in message
    assert "restartPolicy: restart" in message  # and how to start over


def test_incomplete_folders_are_removed_and_unrecorded_checkpoints_still_resume(
    tmp_path: Path,
) -> None:
    run = config(tmp_path)
    checkpoint(run, 10, None)  # written before checkpoints recorded their run
    store = open_store("file://")
    partial = checkpoint_uri(run.output, 30)
    store.write_bytes(partial + "/model.safetensors", b"half")
    assert check_resumable(store, run) == 10
    assert not Path(partial.removeprefix("file://")).exists()
    assert Path(checkpoint_uri(run.output, 10).removeprefix("file://")).exists()


def test_no_checkpoint_starts_fresh(tmp_path: Path) -> None:
    assert check_resumable(open_store("file://"), config(tmp_path)) is None
