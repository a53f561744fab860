"""Reading a training job's output folder (progress.json, metrics.jsonl, the published model)
through llmkube.storage, for either source. metrics.jsonl is parsed again only when it changed:
a long run's file holds 100,000 lines."""

import threading
from dataclasses import dataclass

from pydantic import ValidationError

from llmkube.api.artifacts import METRICS_FILE, MODEL_DIR, PROGRESS_FILE, ProgressRecord
from llmkube.console.curves import RunCurves, extended, parse_metrics
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
        self._reads: dict[str, _Read] = {}
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
        """Read from where the last look stopped when the file only grew (the runtime rewrites
        it with new lines after the old ones: on S3 a ranged GET), whole when it changed."""
        uri = join(output, METRICS_FILE)
        stamp = _stamp(store, uri)
        with self._lock:
            seen = self._reads.get(uri)
        if stamp is None:
            return RunCurves()
        if seen is not None and seen.stamp == stamp:
            return seen.curves
        try:
            base, data, known = _new_bytes(store, uri, seen, stamp)
        except NotFoundError:
            return RunCurves()
        parsed_to = base + data.rfind(b"\n") + 1  # a partial last line waits for next time
        new = parse_metrics(data[known - base : parsed_to - base].decode("utf-8", "replace"))
        curves = extended(seen.curves, new) if known and seen is not None else new
        mark = data[max(0, parsed_to - base - _MARK) : parsed_to - base]
        with self._lock:
            self._reads[uri] = _Read(stamp, parsed_to, mark, curves)
        return curves


_MARK = 64
"""Bytes kept from just before the point a file was parsed to: the same bytes there later mean
the file only grew."""


@dataclass(frozen=True)
class _Read:
    stamp: tuple[int, str]
    """Size and version (modification time or ETag) when read."""
    parsed_to: int
    """Offset just after the last whole line parsed."""
    mark: bytes
    """The bytes just before `parsed_to`."""
    curves: RunCurves


def _new_bytes(
    store: ObjectStore, uri: str, seen: _Read | None, stamp: tuple[int, str]
) -> tuple[int, bytes, int]:
    """(offset of `data`, data, offset up to which lines are already parsed): from just before
    the last look's end when the object still holds the same bytes there, else all of it."""
    if seen is not None and seen.parsed_to and seen.mark and stamp[0] >= seen.parsed_to:
        base = seen.parsed_to - len(seen.mark)
        data = store.read_from(uri, base)
        if data.startswith(seen.mark):
            return base, data, seen.parsed_to
    return 0, store.read_bytes(uri), 0


def _stamp(store: ObjectStore, uri: str) -> tuple[int, str] | None:
    """Changes whenever the object does; None when it does not exist. Files: size and
    modification time (hashing 10 MB on each look would be slow); S3: size and ETag, from a
    listing."""
    if uri.startswith("file://"):
        try:
            stat = local_path(uri).stat()
        except FileNotFoundError:
            return None
        return (stat.st_size, str(stat.st_mtime_ns))
    infos = [info for info in store.list_info(uri) if info.uri == uri]
    return (infos[0].size, infos[0].etag) if infos else None


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
