"""llmkube.storage against a real MinIO server and the local filesystem."""

import threading
import time
from pathlib import Path

import pytest

from llmkube.api.runconfig import StorageConfig
from llmkube.console.curves import parse_metrics
from llmkube.console.outputs import OutputReader
from llmkube.storage import (
    AccessDeniedError,
    NotFoundError,
    ObjectStore,
    StorageError,
    StorageUnavailableError,
    open_store,
)
from llmkube.storage.uri import join
from llmkube.testing.console import metrics_lines
from llmkube.testing.minio import MinioServer


def s3_store(minio: MinioServer, **kwargs: float) -> ObjectStore:
    config = StorageConfig(endpoint=minio.endpoint, insecure=True)
    return open_store("s3://any", config, environ=minio.env, **kwargs)


@pytest.fixture(params=["s3", "file"])
def store_and_root(
    request: pytest.FixtureRequest, minio: MinioServer, bucket: str, tmp_path: Path
) -> tuple[ObjectStore, str]:
    if request.param == "s3":
        return s3_store(minio), f"s3://{bucket}/run"
    return open_store("file://"), f"file://{tmp_path}/run"


def test_write_read_list_delete(store_and_root: tuple[ObjectStore, str]) -> None:
    store, root = store_and_root
    store.write_bytes(join(root, "model", "config.json"), b'{"n_layer": 2}')
    store.write_bytes(join(root, "progress.json"), b"{}")
    assert store.read_bytes(join(root, "model/config.json")) == b'{"n_layer": 2}'
    assert store.list(root) == [join(root, "model/config.json"), join(root, "progress.json")]
    assert store.exists(join(root, "progress.json"))
    store.write_bytes(join(root, "progress.json"), b'{"step": 2}')  # overwrite
    assert store.read_bytes(join(root, "progress.json")) == b'{"step": 2}'
    store.delete(join(root, "progress.json"))
    assert not store.exists(join(root, "progress.json"))
    assert store.list(join(root, "nothing-here")) == []


def test_read_tail(store_and_root: tuple[ObjectStore, str]) -> None:
    store, root = store_and_root
    uri = join(root, "metrics.jsonl")
    data = bytes(range(256)) * 40  # 10 KiB
    store.write_bytes(uri, data)
    assert store.read_tail(uri, 100) == (data[-100:], True)
    assert store.read_tail(uri, 1 << 20) == (data, False)
    with pytest.raises(NotFoundError):
        store.read_tail(join(root, "absent"), 10)


def test_read_from(store_and_root: tuple[ObjectStore, str]) -> None:
    store, root = store_and_root
    uri = join(root, "metrics.jsonl")
    data = bytes(range(256)) * 40
    store.write_bytes(uri, data)
    assert store.read_from(uri, 0) == data
    assert store.read_from(uri, 10_000) == data[10_000:]
    assert store.read_from(uri, len(data)) == b""  # at the end: nothing new, not an error
    assert store.read_from(uri, len(data) + 5) == b""
    with pytest.raises(NotFoundError):
        store.read_from(join(root, "absent"), 0)


def test_the_console_reads_only_what_a_metrics_file_gained(
    store_and_root: tuple[ObjectStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a job page's stream does each second while a run logs, on S3 as on files."""
    store, root = store_and_root
    reads: list[int] = []
    read_from, read_bytes = store.read_from, store.read_bytes

    def counted_from(uri: str, offset: int) -> bytes:
        reads.append(offset)
        return read_from(uri, offset)

    def counted_whole(uri: str) -> bytes:
        reads.append(0)
        return read_bytes(uri)

    monkeypatch.setattr(store, "read_from", counted_from)
    monkeypatch.setattr(store, "read_bytes", counted_whole)
    reader, uri = OutputReader(), join(root, "metrics.jsonl")
    lines = metrics_lines(100, eval_every=50).splitlines(keepends=True)
    store.write_bytes(uri, "".join(lines[:60]).encode())
    assert len(reader.curves(store, root).train_loss) == 59
    store.write_bytes(uri, "".join(lines).encode())
    assert reader.curves(store, root) == parse_metrics("".join(lines))
    first = len("".join(lines[:60]).encode())
    assert reads == [0, first - 64]  # the second look read from just before the first's end
    store.write_bytes(uri, metrics_lines(5).encode())  # a restarted run: read whole again
    assert len(reader.curves(store, root).train_loss) == 5
    assert reads[-1] == 0


def test_missing_object_names_it(store_and_root: tuple[ObjectStore, str]) -> None:
    store, root = store_and_root
    with pytest.raises(NotFoundError, match=r"run/absent\.json"):
        store.read_bytes(join(root, "absent.json"))


def test_missing_bucket_names_it(minio: MinioServer) -> None:
    with pytest.raises(NotFoundError, match=r"s3://no-such-bucket/x.*NoSuchBucket"):
        s3_store(minio).read_bytes("s3://no-such-bucket/x")


def test_wrong_credentials_say_what_to_check(minio: MinioServer, bucket: str) -> None:
    config = StorageConfig(endpoint=minio.endpoint, insecure=True)
    wrong = {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": "wrong"}
    store = open_store("s3://x", config, environ=wrong)
    with pytest.raises(AccessDeniedError, match=r"SignatureDoesNotMatch.*credentials Secret"):
        store.read_bytes(f"s3://{bucket}/x")


def test_unreachable_endpoint_fails_after_the_retry_window() -> None:
    config = StorageConfig(endpoint="127.0.0.1:1", insecure=True)
    store = open_store("s3://x", config, environ={}, retry_for_seconds=1)
    with pytest.raises(StorageUnavailableError, match=r"cannot reach 127\.0\.0\.1:1"):
        store.read_bytes("s3://bucket/key")


def test_an_outage_is_ridden_out_by_retries(minio: MinioServer, bucket: str) -> None:
    store = s3_store(minio, retry_for_seconds=60)
    minio.pause()
    outcome: list[BaseException | float] = []
    writing = threading.Event()

    def write_during_outage() -> None:
        writing.set()
        try:
            store.write_bytes(f"s3://{bucket}/during-outage", b"kept")
            outcome.append(time.monotonic())
        except BaseException as error:
            outcome.append(error)

    writer = threading.Thread(target=write_during_outage)
    writer.start()
    assert writing.wait(30)
    time.sleep(3)  # the outage goes on while the write is under way
    resumed = time.monotonic()
    minio.resume()  # from this thread: a server must be started by a thread that outlives it
    writer.join(60)
    assert len(outcome) == 1
    assert isinstance(outcome[0], float), outcome
    assert outcome[0] >= resumed, "the write should have waited out the outage"
    assert store.read_bytes(f"s3://{bucket}/during-outage") == b"kept"


def test_no_endpoint_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match=r"no S3 endpoint; set storage\.endpoint"):
        open_store("s3://bucket/x", StorageConfig(), environ={})


def test_relative_file_uri_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        open_store("file://").read_bytes("file://relative/path")
