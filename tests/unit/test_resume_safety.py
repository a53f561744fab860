"""A checkpoint says what run made it; a run that differs refuses to resume from it, and folders
a crash left half-written are removed first. On real files (the file:// store)."""

from pathlib import Path
from typing import Any

import pytest

from llmkube.api.run_identity import identity_hash, run_identity
from llmkube.runtime.training.checkpoint import (
    CheckpointMismatchError,
    check_resumable,
    checkpoint_uri,
    load_state,
)
from llmkube.storage import open_store
from tests.unit.file_runs import checkpoint, file_run_config


def test_the_same_run_resumes_and_settings_that_may_change_do_not_matter(tmp_path: Path) -> None:
    run = file_run_config(tmp_path)
    uri = checkpoint(run, 20, run_identity(run))
    assert load_state(open_store("file://"), uri).identity_hash == identity_hash(run_identity(run))
    longer = file_run_config(
        tmp_path, training={"maxSteps": 400, "learningRate": 0.01, "batchSize": 16}
    )
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
    run = file_run_config(tmp_path)
    checkpoint(run, 20, run_identity(run))
    with pytest.raises(CheckpointMismatchError) as refused:
        check_resumable(open_store("file://"), file_run_config(tmp_path, **change))
    message = str(refused.value)
    assert says in message
    assert "step 20" in message
    assert "restartPolicy: restart" in message  # and how to start over


def test_incomplete_folders_are_removed_and_unrecorded_checkpoints_still_resume(
    tmp_path: Path,
) -> None:
    run = file_run_config(tmp_path)
    checkpoint(run, 10, None)  # written before checkpoints recorded their run
    store = open_store("file://")
    partial = checkpoint_uri(run.output, 30)
    store.write_bytes(partial + "/model.safetensors", b"half")
    assert check_resumable(store, run) == 10
    assert not Path(partial.removeprefix("file://")).exists()
    assert Path(checkpoint_uri(run.output, 10).removeprefix("file://")).exists()


def test_no_checkpoint_starts_fresh(tmp_path: Path) -> None:
    assert check_resumable(open_store("file://"), file_run_config(tmp_path)) is None
