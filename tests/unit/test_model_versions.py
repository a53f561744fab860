"""Versioned models on real files (the file:// store): each publication is a version named by
its content, `<output>/model` points at the newest in one write, and every reader resolves
the pointer first; a run decides what to do with another run's work in its output
(restartPolicy)."""

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from llmkube.api.artifacts import PUBLISHED_LAST, model_pointer_uri, version_uri
from llmkube.api.run_identity import (
    RUN_CONFIG_FILE,
    identity_hash,
    output_identity,
    run_identity,
)
from llmkube.api.runconfig import GptConfig, TrainingRunConfig
from llmkube.runtime.artifact import load_artifact, save_artifact
from llmkube.runtime.models import build_model
from llmkube.runtime.tokenizer import byte_tokenizer
from llmkube.runtime.training.output import OutputInUseError, plan_output
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.models import inspect_model
from llmkube.storage.store import LocalStore
from llmkube.storage.versions import (
    BadPointerError,
    content_version,
    publish_version,
    read_pointer,
    resolve_model,
)
from tests.unit.file_runs import checkpoint, file_run_config


class WatchedStore(LocalStore):
    """A file:// store that calls `after_write` after every object it writes."""

    def __init__(self, after_write: Callable[[str], None]) -> None:
        self.after_write = after_write
        self.written: list[str] = []

    def write_bytes(self, uri: str, data: bytes) -> None:
        super().write_bytes(uri, data)
        self.written.append(uri)
        self.after_write(uri)


def stage_gpt(folder: Path, n_layer: int) -> torch.Tensor:
    """A tiny GPT artifact staged in `folder`; its embedding weights, to recognise it by."""
    config = GptConfig(
        n_layer=n_layer, n_head=2, d_model=32, context_length=16, dropout=0.0, vocab_size=256
    )
    torch.manual_seed(n_layer)
    model = build_model(config)
    folder.mkdir(parents=True)
    save_artifact(
        LocalStore(),
        folder.as_uri(),
        model=model,
        config=config,
        tokenizer=byte_tokenizer(),
        evaluation={"n_layer": n_layer},
        card="# test\n",
    )
    return next(iter(model.trainable_state().values())).clone()


def publish(store: ObjectStore, output: str, folder: Path, run: str = "run") -> str:
    return publish_version(
        store, output, folder, run=run, provenance=b"{}", last=PUBLISHED_LAST
    ).version


def test_a_folder_without_a_pointer_is_read_where_it_is(tmp_path: Path) -> None:
    store = open_store("file://")
    plain = f"file://{tmp_path}/imported/"
    assert resolve_model(store, plain).uri == f"file://{tmp_path}/imported"
    assert resolve_model(store, plain).version is None


def test_model_points_at_the_newest_version_and_older_versions_stay(tmp_path: Path) -> None:
    store, output = open_store("file://"), f"file://{tmp_path}/out"
    first_weights = stage_gpt(tmp_path / "first", n_layer=1)
    second_weights = stage_gpt(tmp_path / "second", n_layer=2)
    first = publish(store, output, tmp_path / "first")
    assert resolve_model(store, f"{output}/model").uri == version_uri(output, first)
    second = publish(store, output, tmp_path / "second")
    assert second != first
    resolved = resolve_model(store, f"{output}/model")
    assert (resolved.uri, resolved.version) == (version_uri(output, second), second)
    assert inspect_model(store, f"{output}/model").version == second
    loaded = load_artifact(store, f"{output}/model")
    assert torch.equal(next(iter(loaded.model.trainable_state().values())), second_weights)
    # The older version is untouched, and can be served by its own URI.
    old = load_artifact(store, version_uri(output, first))
    assert torch.equal(next(iter(old.model.trainable_state().values())), first_weights)


def test_a_folder_inside_the_model_is_read_inside_the_version(tmp_path: Path) -> None:
    """`<output>/model/merged` (a LoRA job's merged model) is that folder of the version."""
    store, output = open_store("file://"), f"file://{tmp_path}/out"
    stage_gpt(tmp_path / "staged" / "merged", n_layer=1)
    version = publish(store, output, tmp_path / "staged")
    resolved = resolve_model(store, f"{output}/model/merged/")
    assert resolved.uri == f"{version_uri(output, version)}/merged"
    assert load_artifact(store, f"{output}/model/merged").config.n_layer == 1
    assert resolve_model(store, f"file://{tmp_path}/elsewhere/model/merged").version is None


def test_the_same_bytes_are_the_same_version_and_are_not_uploaded_again(tmp_path: Path) -> None:
    stage_gpt(tmp_path / "staged", n_layer=1)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in (tmp_path / "staged").iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert content_version(tmp_path / "staged") == content_version(copy)
    (copy / "eval.json").write_text('{"n_layer": 3}')
    assert content_version(tmp_path / "staged") != content_version(copy)

    output = f"file://{tmp_path}/out"
    store = WatchedStore(lambda uri: None)
    publish(store, output, tmp_path / "staged")
    store.written.clear()
    publish(store, output, tmp_path / "staged", run="another run")
    # Only the provenance and the pointer are written the second time.
    assert [uri.rsplit("/", 1)[1] for uri in store.written] == ["run.json", "current.json"]


def test_a_reader_during_a_publication_loads_the_old_model_or_the_new_one_never_a_mix(
    tmp_path: Path,
) -> None:
    """A replica that starts while a job publishes: after each object the publication writes,
    load the model as a replica would. The two versions differ in shape, so new weights under
    an old config (or the reverse) would not even load."""
    output = f"file://{tmp_path}/out"
    old_weights = stage_gpt(tmp_path / "old", n_layer=1)
    new_weights = stage_gpt(tmp_path / "new", n_layer=2)
    publish(LocalStore(), output, tmp_path / "old")
    seen: list[str] = []

    def load_as_a_replica(written: str) -> None:
        loaded = load_artifact(LocalStore(), f"{output}/model")
        weights = next(iter(loaded.model.trainable_state().values()))
        if loaded.config.n_layer == 1:
            assert torch.equal(weights, old_weights), f"old config, other weights after {written}"
            seen.append("old")
        else:
            assert torch.equal(weights, new_weights), f"new config, other weights after {written}"
            seen.append("new")

    store = WatchedStore(load_as_a_replica)
    publish(store, output, tmp_path / "new")
    assert len(store.written) >= 5  # weights, tokenizer, eval, card, config, run.json, pointer
    assert seen == ["old"] * (len(store.written) - 1) + ["new"]


def test_a_pointer_that_is_not_one_is_reported(tmp_path: Path) -> None:
    store, output = open_store("file://"), f"file://{tmp_path}/out"
    store.write_bytes(model_pointer_uri(output), b"not json")
    with pytest.raises(BadPointerError, match="is not a model pointer"):
        resolve_model(store, f"{output}/model")


# What a run does with the output it is given.


def published_by(run: TrainingRunConfig, tmp_path: Path, name: str) -> str:
    """Publish a model as `run` would, and record it as the last run started there."""
    stage_gpt(tmp_path / name, n_layer=1 + len(name) % 3)
    store = open_store("file://")
    store.write_bytes(f"{run.output}/{RUN_CONFIG_FILE}", run.model_dump_json().encode())
    return publish_version(
        store,
        run.output,
        tmp_path / name,
        run=identity_hash(output_identity(run)),
        provenance=run.model_dump_json(by_alias=True).encode(),
    ).version


def leave_checkpoint(run: TrainingRunConfig, step: int) -> None:
    """What an interrupted run leaves: a checkpoint, its settings, progress and metrics."""
    checkpoint(run, step, run_identity(run))
    store = open_store("file://")
    store.write_bytes(f"{run.output}/{RUN_CONFIG_FILE}", run.model_dump_json().encode())
    store.write_bytes(f"{run.output}/progress.json", b"{}")
    store.write_bytes(f"{run.output}/metrics.jsonl", b"{}\n")


def test_a_run_with_the_settings_that_published_the_model_finishes_at_once(
    tmp_path: Path,
) -> None:
    run = file_run_config(tmp_path)
    version = published_by(run, tmp_path, "first")
    renamed = run.model_copy(update={"job": run.job.model_copy(update={"name": "other-name"})})
    plan = plan_output(open_store("file://"), renamed)
    assert plan.published is not None
    assert plan.published.version == version


def test_other_settings_are_refused_unless_restart_is_asked_for(tmp_path: Path) -> None:
    published = file_run_config(tmp_path)
    published_by(published, tmp_path, "first")
    longer = file_run_config(tmp_path, training={"maxSteps": 400})
    with pytest.raises(OutputInUseError) as refused:
        plan_output(open_store("file://"), longer)
    assert "training.maxSteps: 100 -> 400" in str(refused.value)
    assert "restartPolicy: restart" in str(refused.value)


def test_restart_deletes_the_old_runs_work_but_keeps_what_it_published(tmp_path: Path) -> None:
    store = open_store("file://")
    old = file_run_config(tmp_path)
    version = published_by(old, tmp_path, "first")
    leave_checkpoint(old, 40)
    (tmp_path / "out" / "cache").mkdir()
    (tmp_path / "out" / "cache" / "manifest.json").write_text("{}")
    restart = file_run_config(tmp_path, training={"maxSteps": 400}, restartPolicy="restart")
    plan = plan_output(store, restart)
    assert (plan.published, plan.resume_from) == (None, None)
    out = tmp_path / "out"
    assert store.list(f"{old.output}/checkpoints/") == []
    assert not (out / "progress.json").exists()
    assert not (out / "metrics.jsonl").exists()
    assert (out / "cache" / "manifest.json").exists()
    # The deployment serving the old model keeps it until the new one is published.
    pointer = read_pointer(store, old.output)
    assert pointer is not None
    assert pointer.version == version
    assert (out / "versions" / version / "model.safetensors").exists()


def test_a_restarted_run_that_is_itself_restarted_resumes_its_own_checkpoints(
    tmp_path: Path,
) -> None:
    """After the first attempt of a restart recorded its settings, a second attempt (Ray
    restarting the driver, the operator retrying) resumes instead of starting over again."""
    old = file_run_config(tmp_path)
    published_by(old, tmp_path, "first")
    restart = file_run_config(tmp_path, training={"maxSteps": 400}, restartPolicy="restart")
    leave_checkpoint(restart, 60)
    assert plan_output(open_store("file://"), restart).resume_from == 60


def test_restart_also_replaces_checkpoints_of_another_model(tmp_path: Path) -> None:
    small = file_run_config(tmp_path, model={"preset": "small"})
    leave_checkpoint(small, 30)
    (tmp_path / "out" / RUN_CONFIG_FILE).unlink()  # a run that recorded no settings
    tiny = file_run_config(tmp_path)
    with pytest.raises(Exception, match="restartPolicy: restart"):
        plan_output(open_store("file://"), tiny)
    restart = file_run_config(tmp_path, restartPolicy="restart")
    assert plan_output(open_store("file://"), restart).resume_from is None
    assert open_store("file://").list(f"{tiny.output}/checkpoints/") == []
