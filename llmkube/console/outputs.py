"""Reading a training job's output folder (progress.json, metrics.jsonl, the published model)
through llmkube.storage, for either source. metrics.jsonl is parsed again only when it changed:
a long run's file holds 100,000 lines."""

import threading
from dataclasses import dataclass

from pydantic import ValidationError

from llmkube.api.artifacts import METRICS_FILE, MODEL_DIR, PROGRESS_FILE, ProgressRecord
from llmkube.console.curves import RunCurves, parse_metrics
from llmkube.storage import NotFoundError, ObjectStore, StorageError
from llmkube.storage.uri import join, local_path
from llmkube.storage.versions import BadPointerError, read_pointer


@dataclass(frozen=True)
class OutputState:
    progress: ProgressRecord | None
    curves: RunCurves
    model_uri: str | None
    """`<output>/model` once a model is published there."""
    error: str | None = None
    """Why the output could not be read (unreachable storage, denied access)."""


class OutputReader:
    """Thread-safe: the console serves pages from several threads."""

    def __init__(self) -> None:
        self._curves: dict[str, tuple[str, RunCurves]] = {}
        self._lock = threading.Lock()

    def read(self, store: ObjectStore, output: str) -> OutputState:
        try:
            return OutputState(
                progress=_progress(store, output),
                curves=self.curves(store, output),
                model_uri=_published(store, output),
            )
        except StorageError as error:
            return OutputState(None, RunCurves(), None, error=str(error))

    def curves(self, store: ObjectStore, output: str) -> RunCurves:
        uri = join(output, METRICS_FILE)
        tag = _content_tag(store, uri)
        if tag is None:
            return RunCurves()
        with self._lock:
            cached = self._curves.get(uri)
        if cached is not None and cached[0] == tag:
            return cached[1]
        try:
            curves = parse_metrics(store.read_bytes(uri).decode("utf-8", "replace"))
        except NotFoundError:
            return RunCurves()
        with self._lock:
            self._curves[uri] = (tag, curves)
        return curves


def _content_tag(store: ObjectStore, uri: str) -> str | None:
    """Changes whenever the object does; None when it does not exist. For files, size and
    modification time (hashing 10 MB on each look would be slow); for S3, the ETag from a
    listing."""
    if uri.startswith("file://"):
        try:
            stat = local_path(uri).stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_size}-{stat.st_mtime_ns}"
    infos = [info for info in store.list_info(uri) if info.uri == uri]
    return infos[0].etag if infos else None


def _progress(store: ObjectStore, output: str) -> ProgressRecord | None:
    try:
        return ProgressRecord.model_validate_json(store.read_bytes(join(output, PROGRESS_FILE)))
    except (NotFoundError, ValidationError):
        return None


def _published(store: ObjectStore, output: str) -> str | None:
    try:
        pointer = read_pointer(store, output)
    except BadPointerError:
        return None
    return join(output, MODEL_DIR) if pointer is not None else None
