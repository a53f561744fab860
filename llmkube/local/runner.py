"""Running the planned entrypoints as child processes (each in its own session, so stopping one
stops the local Ray cluster it started), with live progress read from the output's
progress.json and metrics.jsonl — the files the operator reads in a cluster. A stop signal
(llmkube.local.stop_requests) stops the running child and raises StoppedError."""

import contextlib
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from llmkube.api.artifacts import (
    CHECKPOINTS_DIR,
    EVAL_FILE,
    METRICS_FILE,
    MODEL_DIR,
    MODEL_POINTER_FILE,
    PROGRESS_FILE,
    VERSIONS_DIR,
    complete_checkpoints_among,
)
from llmkube.api.export import EXPORT_MANIFEST_FILE, ONNX_DIR, ExportManifest
from llmkube.api.runconfig import ServeRunConfig, TrainingRunConfig, TuningRunConfig
from llmkube.api.tuning import TUNING_CONFIG_FILE, TuningProgress
from llmkube.local.child import Child
from llmkube.local.run_state import now, write_state
from llmkube.local.stop_requests import StopRequests
from llmkube.stopping import exit_code, signal_name
from llmkube.storage import StorageError, open_store
from llmkube.storage.uri import join

POLL_SECONDS = 1.0


def write_run_config(
    config: TrainingRunConfig | ServeRunConfig | TuningRunConfig, path: Path
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: a running server re-reads its config when the file changes.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(config.model_dump_json(by_alias=True, indent=2))
    partial.replace(path)
    return path


def train_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "llmkube.runtime.train", "--config", str(config_path)]


def tune_command(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "llmkube.runtime.tune", "--config", str(config_path)]


def serve_command(config_path: Path, port: int, *, via_proxy: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llmkube.runtime.serve",
        "--config",
        str(config_path),
        "--port",
        str(port),
        *(["--via-proxy"] if via_proxy else []),
    ]


class StoppedError(Exception):
    """A stop signal: the child was stopped; a re-run resumes. The message says how."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code(signum)


def _read_json(config: TrainingRunConfig | TuningRunConfig, name: str) -> dict[str, object] | None:
    uri = join(config.output, name)
    try:
        store = open_store(uri, config.storage, retry_for_seconds=0)
        if not store.exists(uri):
            return None
        loaded: dict[str, object] = json.loads(store.read_bytes(uri))
    except (StorageError, ValueError):
        return None
    return loaded


def _newest_checkpoint(config: TrainingRunConfig) -> int | None:
    """The step a re-run resumes from. Not progress.json's checkpoint: it is updated a moment
    after a checkpoint completes, and a stop in that moment would name the one before."""
    prefix = join(config.output, CHECKPOINTS_DIR) + "/"
    try:
        listing = open_store(prefix, config.storage, retry_for_seconds=0).list(prefix)
    except StorageError:
        return None
    complete = complete_checkpoints_among(listing)
    return complete[-1][0] if complete else None


def _latest_loss(config: TrainingRunConfig) -> tuple[float | None, float | None]:
    uri = join(config.output, METRICS_FILE)
    try:
        store = open_store(uri, config.storage, retry_for_seconds=0)
        tail, _ = store.read_tail(uri, 16 * 1024) if store.exists(uri) else (b"", False)
    except StorageError:
        return None, None
    loss = rate = None
    for line in tail.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("kind") == "train":
                loss, rate = record.get("train_loss"), record.get("tokens_per_second")
    return loss, rate


def train(
    config: TrainingRunConfig, workdir: Path, console: Console, stops: StopRequests
) -> dict[str, object]:
    """Run one training job to the end; returns its eval.json."""
    command = train_command(write_run_config(config, workdir / "run.json"))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )

    def last_checkpoint() -> str:
        step = _newest_checkpoint(config)
        return f" (last checkpoint: step {step})" if step is not None else ""

    _run_to_end(
        Job("training", config.job.name, config.output, command, workdir / "train.log"),
        console,
        stops,
        progress_columns=columns,
        show=lambda progress, task: _show(progress, task, config),
        resumes_from=last_checkpoint,
    )
    pointer = _read_json(config, f"{MODEL_DIR}/{MODEL_POINTER_FILE}") or {}
    version = pointer.get("version")
    return _read_json(config, f"{VERSIONS_DIR}/{version}/{EVAL_FILE}") or {}


def tune(
    config: TuningRunConfig, workdir: Path, console: Console, stops: StopRequests
) -> dict[str, object]:
    """Run one hyperparameter search to the end; returns its progress.json."""
    command = tune_command(write_run_config(config, workdir / TUNING_CONFIG_FILE))
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} trials"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    _run_to_end(
        Job("tuning", config.job.name, config.output, command, workdir / "tune.log"),
        console,
        stops,
        progress_columns=columns,
        show=lambda progress, task: _show_search(progress, task, config),
        resumes_from=lambda: " (finished trials are not run again)",
    )
    return _read_json(config, PROGRESS_FILE) or {}


@dataclass(frozen=True)
class Job:
    """A child that runs to the end: what it is, and how it is started."""

    what: str
    """training or tuning"""
    name: str
    output: str
    command: list[str]
    log: Path


def _run_to_end(
    job: Job,
    console: Console,
    stops: StopRequests,
    *,
    progress_columns: tuple[ProgressColumn, ...],
    show: Callable[[Progress, TaskID], None],
    resumes_from: Callable[[], str],
) -> None:
    workdir = job.log.parent
    stops.check()
    started = now()
    write_state(workdir, "Running", started_at=started)
    # Whichever way this block is left, the child and its session are stopped.
    with stops.watch(Child(job.command, job.log)) as child:
        console.print(f"{job.what} [bold]{job.name}[/] → {job.output} (log: {child.log_path})")
        with Progress(*progress_columns, console=console, transient=False) as progress:
            task = progress.add_task("preparing data", total=None, detail="")
            while child.poll() is None and not stops.wait(POLL_SECONDS):
                show(progress, task)
            show(progress, task)
        if stops.signum is not None:
            console.print(f"stopping {job.what}…")
            child.stop()
            where = resumes_from()
            write_state(
                workdir,
                "Stopped",
                message=f"stopped by {signal_name(stops.signum)}{where}",
                started_at=started,
            )
            raise StoppedError(
                f"{job.what} stopped by {signal_name(stops.signum)}; run the same command again "
                f"to resume{where}",
                stops.signum,
            )
        code = child.poll()
        if code != 0:
            console.print(child.log_tail(), markup=False, highlight=False)
            write_state(
                workdir,
                "Failed",
                message=f"exit code {code}; see {child.log_path}",
                started_at=started,
            )
            raise RuntimeError(
                f"{job.what} {job.name} failed (exit code {code}); see {child.log_path}"
            )
    write_state(workdir, "Succeeded", started_at=started)


def _show_search(progress: Progress, task: TaskID, config: TuningRunConfig) -> None:
    state = _read_json(config, PROGRESS_FILE)
    if state is None:
        return
    search = TuningProgress.model_validate(state)
    counts = search.trials
    best = search.best_trial
    detail = " ".join(
        part
        for part in (
            f"{counts.running} running" if counts.running else "",
            f"{counts.stopped_early} stopped early" if counts.stopped_early else "",
            f"{counts.failed} failed" if counts.failed else "",
            f"best {config.objective.metric} {best.metric:.4f} ({best.trial})" if best else "",
        )
        if part
    )
    progress.update(
        task,
        description=f"tuning {config.job.name}",
        completed=counts.succeeded + counts.stopped_early + counts.failed,
        total=counts.total or None,
        detail=detail,
    )


def onnx_export(config: TrainingRunConfig) -> ExportManifest | None:
    """The export of the published version in <output>/onnx/, once spec.export.onnx made it."""
    found = _read_json(config, f"{ONNX_DIR}/{EXPORT_MANIFEST_FILE}")
    pointer = _read_json(config, f"{MODEL_DIR}/{MODEL_POINTER_FILE}")
    if found is None or pointer is None:
        return None
    manifest = ExportManifest.model_validate(found)
    return manifest if manifest.source_version == pointer.get("version") else None


def _show(progress: Progress, task: TaskID, config: TrainingRunConfig) -> None:
    state = _read_json(config, PROGRESS_FILE)
    if state is None:
        return
    step, total = int(state.get("step", 0)), int(state.get("total_steps", 0))  # type: ignore[call-overload]
    what = f"training {config.job.name}"
    if (
        config.export.onnx.enabled
        and step >= total
        and _read_json(config, f"{MODEL_DIR}/{MODEL_POINTER_FILE}") is not None
        and onnx_export(config) is None
    ):
        what = f"exporting {config.job.name} to ONNX"
    loss, rate = _latest_loss(config)
    eta = state.get("eta_s")
    detail = " ".join(
        part
        for part in (
            f"loss {loss:.3f}" if isinstance(loss, float) else "",
            f"{rate:,.0f} tok/s" if isinstance(rate, float) else "",
            f"eta {int(eta)}s" if isinstance(eta, float | int) else "",
        )
        if part
    )
    progress.update(task, description=what, completed=step, total=total or None, detail=detail)


def serve(
    config: ServeRunConfig, workdir: Path, port: int, console: Console, stops: StopRequests
) -> int:
    """Serve until a stop signal or until the server stops; returns the server's exit code."""
    command = serve_command(write_run_config(config, workdir / "serve.json"), port)
    url = f"http://127.0.0.1:{port}/v1"
    stops.check()
    started = now()
    write_state(workdir, "Starting", started_at=started)
    with stops.watch(Child(command, workdir / "serve.log")) as child:
        with console.status(
            f"starting Ray Serve for {config.deployment.name} (log: {child.log_path})"
        ):
            while child.poll() is None and "serving " not in child.log_text():
                if stops.wait(0.5):
                    break
        if child.poll() is None and stops.signum is None:
            write_state(workdir, "Serving", endpoint=url, started_at=started)
            console.print(f"[green]serving[/] [bold]{config.deployment.name}[/] at {url}")
            console.print(
                f"  try: llmkube chat --endpoint {url}\n"
                f"       curl {url}/completions -H 'Content-Type: application/json' "
                f'-d \'{{"model": "{config.deployment.name}", "prompt": "The ", '
                f'"max_tokens": 40}}\'\n  Ctrl-C stops.'
            )
            while child.poll() is None and not stops.wait(0.5):
                pass
        if stops.signum is not None:
            console.print("stopping the server…")
            code = child.stop()
            unclean = (
                "" if code in (0, -signal.SIGTERM) else f" (it exited {code}; see {child.log_path})"
            )
            write_state(
                workdir,
                "Stopped",
                message=f"stopped by {signal_name(stops.signum)}{unclean}",
                started_at=started,
            )
            raise StoppedError(
                f"serving stopped by {signal_name(stops.signum)}{unclean}; run the same command "
                "again to serve again (a published model is not trained again)",
                stops.signum,
            )
        console.print(child.log_tail(), markup=False, highlight=False)
        write_state(
            workdir,
            "Failed",
            message=f"the server exited; see {child.log_path}",
            started_at=started,
        )
        return child.poll() or 1
