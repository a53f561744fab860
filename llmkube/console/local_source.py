"""The console's view of the local data folder: the jobs, searches and deployments `llmkube run`
ran (`<data dir>/runs/<job>/`, `<data dir>/tuning/<search>/`, `<data dir>/serve/<name>/`), read
from the run configs and state files it wrote there and from each one's output."""

import re
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from llmkube.api.artifacts import METRICS_FILE, MODEL_DIR, MODEL_POINTER_FILE, PROGRESS_FILE
from llmkube.api.contract import deployment_series
from llmkube.api.runconfig import ServeRunConfig, TrainingRunConfig, TuningRunConfig
from llmkube.api.tuning import TUNING_CONFIG_FILE
from llmkube.console.curves import RunCurves
from llmkube.console.hyperparameters import hyperparameters
from llmkube.console.outputs import OutputReader, OutputState
from llmkube.console.searches import (
    SearchDetail,
    SearchRow,
    read_search_output,
    search_detail,
    search_row,
)
from llmkube.console.source import (
    DeploymentRow,
    JobDetail,
    JobQuery,
    JobRow,
    JobsPage,
    Visible,
    everywhere,
    page_of,
)
from llmkube.local.run_state import STATE_FILE, LocalRunState, read_state
from llmkube.storage import StorageError, open_store
from llmkube.storage.uri import local_path

LOG_TAIL_BYTES = 8 * 1024
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LOCAL_NAMESPACE = "local"
"""What the pages show as a local run's namespace."""


class LocalSource:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.outputs = OutputReader()
        self._configs: dict[Path, tuple[Stamp, TrainingRunConfig | None]] = {}
        self._rows: dict[Path, tuple[tuple[Stamp, ...] | None, JobRow]] = {}

    def jobs(self, query: JobQuery) -> JobsPage:
        rows = [
            row
            for workdir in self._job_dirs()
            if query.text.lower() in workdir.name.lower()
            and (row := self._row(workdir)) is not None
        ]
        return page_of(rows, query)

    def job(self, namespace: str, name: str) -> JobDetail | None:
        workdir = self.data_dir / "runs" / name
        config = self._config(workdir)
        if config is None or namespace != LOCAL_NAMESPACE:
            return None
        state = read_state(workdir)
        output = self._output(config)
        return JobDetail(
            row=_row(name, config, state, output, workdir),
            output=config.output,
            model_uri=output.model_uri,
            message=output.error or (state.message if state else ""),
            hyperparameters=hyperparameters(config),
            log_tail=_tail(workdir / "train.log"),
        )

    def curves(self, namespace: str, name: str) -> RunCurves:
        config = self._config(self.data_dir / "runs" / name)
        if config is None or namespace != LOCAL_NAMESPACE:
            return RunCurves()
        try:
            store = open_store(config.output, config.storage, retry_for_seconds=0)
            return self.outputs.curves(store, config.output)
        except StorageError:
            return RunCurves()

    def deployments(self, visible: Visible = everywhere) -> list[DeploymentRow]:
        root = self.data_dir / "serve"
        folders = sorted(root.iterdir()) if root.is_dir() and visible(LOCAL_NAMESPACE) else []
        return [row for folder in folders if (row := _deployment(folder)) is not None]

    def deployment(self, namespace: str, name: str) -> DeploymentRow | None:
        if namespace != LOCAL_NAMESPACE:
            return None
        return _deployment(self.data_dir / "serve" / name)

    def searches(self, visible: Visible = everywhere) -> list[SearchRow]:
        root = self.data_dir / "tuning"
        folders = sorted(root.iterdir()) if root.is_dir() and visible(LOCAL_NAMESPACE) else []
        return [found.row for folder in folders if (found := _search(folder)) is not None]

    def search(self, namespace: str, name: str) -> SearchDetail | None:
        if namespace != LOCAL_NAMESPACE:
            return None
        return _search(self.data_dir / "tuning" / name)

    def _job_dirs(self) -> list[Path]:
        root = self.data_dir / "runs"
        return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []

    def _row(self, workdir: Path) -> JobRow | None:
        """Rebuilt only when one of its files changed, or while it runs (its process may die
        without a file changing): the jobs page reads a thousand of them."""
        config = self._config(workdir)
        if config is None:
            return None
        key = _fingerprint(workdir, config)
        cached = self._rows.get(workdir)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        row = _row(workdir.name, config, read_state(workdir), self._output(config), workdir)
        if row.phase not in LIVE_PHASES:
            self._rows[workdir] = (key, row)
        return row

    def _config(self, workdir: Path) -> TrainingRunConfig | None:
        stamp = _stamp(workdir / "run.json")
        cached = self._configs.get(workdir)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        config = _training_config(workdir)
        self._configs[workdir] = (stamp, config)
        return config

    def _output(self, config: TrainingRunConfig) -> OutputState:
        try:
            store = open_store(config.output, config.storage, retry_for_seconds=0)
        except StorageError as error:
            return OutputState(None, RunCurves(), None, error=str(error))
        return self.outputs.read(store, config.output)


Stamp = tuple[int, int] | None
"""A file's modification time and size; None when it does not exist."""
LIVE_PHASES = ("Running", "Starting", "Serving")


def _stamp(path: Path) -> Stamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


def _fingerprint(workdir: Path, config: TrainingRunConfig) -> tuple[Stamp, ...] | None:
    """Every file a row is built from; None for outputs in object storage (read each time)."""
    if not config.output.startswith("file://"):
        return None
    output = local_path(config.output)
    return tuple(
        _stamp(path)
        for path in (
            workdir / "run.json",
            workdir / STATE_FILE,
            output / PROGRESS_FILE,
            output / METRICS_FILE,
            output / MODEL_DIR / MODEL_POINTER_FILE,
        )
    )


def _training_config(workdir: Path) -> TrainingRunConfig | None:
    try:
        return TrainingRunConfig.model_validate_json((workdir / "run.json").read_text())
    except (OSError, ValidationError):
        return None


def _row(
    name: str,
    config: TrainingRunConfig,
    state: LocalRunState | None,
    output: OutputState,
    workdir: Path,
) -> JobRow:
    progress, curves = output.progress, output.curves
    # No state: run by an llmkube that wrote none.
    phase = state.phase if state else "Succeeded" if output.model_uri else "Unknown"
    return JobRow(
        name=name,
        namespace=LOCAL_NAMESPACE,
        phase=phase,
        step=progress.step if progress else 0,
        total_steps=progress.total_steps if progress else config.training.max_steps or 0,
        train_loss=curves.train_loss.values[-1] if curves.train_loss.values else None,
        eval_loss=curves.eval_loss.values[-1] if curves.eval_loss.values else None,
        tokens_per_second=(
            curves.tokens_per_second.values[-1] if curves.tokens_per_second.values else None
        ),
        eta_s=progress.eta_s if progress and phase == "Running" else None,
        created=state.started_at if state else _modified(workdir / "run.json"),
    )


def _search(folder: Path) -> SearchDetail | None:
    """A search `llmkube run` ran in `folder` (`<data dir>/tuning/<name>/`)."""
    try:
        config = TuningRunConfig.model_validate_json((folder / TUNING_CONFIG_FILE).read_text())
        store = open_store(config.output, config.storage, retry_for_seconds=0)
    except (OSError, ValidationError, StorageError):
        return None
    state = read_state(folder)
    found = read_search_output(store, config.output)
    finished = found.progress is not None and found.progress.finished
    phase = state.phase if state else "Succeeded" if finished else "Unknown"
    row = search_row(folder.name, LOCAL_NAMESPACE, phase, config, found.progress)
    return search_detail(row, config, found, state.message if state else "")


def _deployment(folder: Path) -> DeploymentRow | None:
    try:
        config = ServeRunConfig.model_validate_json((folder / "serve.json").read_text())
    except (OSError, ValidationError):
        return None
    state = read_state(folder)
    serving = state is not None and state.phase == "Serving"
    return DeploymentRow(
        name=config.deployment.name,
        namespace=LOCAL_NAMESPACE,
        phase=state.phase if state else "Unknown",
        model_uri=config.model_uri,
        endpoint=state.endpoint if state and serving else None,
        needs_api_key=config.api_key_env is not None,
        series=deployment_series(None, config.deployment.name),
        ready_replicas=config.replicas if serving else 0,
        replicas=config.replicas,
        max_replicas=config.replicas,
        adapters=[adapter.name for adapter in config.adapters],
    )


def _tail(path: Path) -> str | None:
    """The log's last lines, whole, without the colour codes Ray writes into it."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - LOG_TAIL_BYTES))
            text = file.read().decode("utf-8", "replace")
    except OSError:
        return None
    if size > LOG_TAIL_BYTES:
        text = text.partition("\n")[2]
    return ANSI_ESCAPE.sub("", text)


def _modified(path: Path) -> str:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    except OSError:
        return ""
