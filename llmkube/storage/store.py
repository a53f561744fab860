"""One small interface over s3:// and file:// object storage."""

import builtins
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import urllib3
from minio import Minio
from minio.error import S3Error

from llmkube.api.runconfig import StorageConfig
from llmkube.storage.errors import (
    AccessDeniedError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
)
from llmkube.storage.uri import local_path, parse_s3

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    etag: str
    """Changes whenever the content does (S3's ETag; an MD5 of the content for files)."""


_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_TRANSIENT = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "XMinioServerNotInitialized",
}


class ObjectStore(Protocol):
    """Whole-object reads and writes under URIs of one scheme."""

    def read_bytes(self, uri: str) -> bytes: ...
    def read_tail(self, uri: str, max_bytes: int) -> tuple[bytes, bool]:
        """The last `max_bytes` of an object, and whether that is not the whole object."""
        ...

    def read_from(self, uri: str, offset: int) -> bytes:
        """An object's bytes from `offset` to its end (none when it is no longer)."""
        ...

    def write_bytes(self, uri: str, data: bytes) -> None: ...
    def exists(self, uri: str) -> bool: ...
    def list(self, prefix: str) -> list[str]:
        """URIs of every object under `prefix`, sorted."""
        ...

    def list_info(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Like `list`, with each object's size and content tag."""
        ...

    def delete(self, uri: str) -> None: ...


class LocalStore:
    """file:// URIs: the embedded default, no server needed. Writes are atomic (rename)."""

    def read_bytes(self, uri: str) -> bytes:
        path = local_path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{uri}: no such file") from None
        except PermissionError:
            raise AccessDeniedError(f"{uri}: permission denied") from None

    def read_tail(self, uri: str, max_bytes: int) -> tuple[bytes, bool]:
        path = local_path(uri)
        try:
            with path.open("rb") as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - max_bytes))
                return file.read(), size > max_bytes
        except FileNotFoundError:
            raise NotFoundError(f"{uri}: no such file") from None
        except PermissionError:
            raise AccessDeniedError(f"{uri}: permission denied") from None

    def read_from(self, uri: str, offset: int) -> bytes:
        path = local_path(uri)
        try:
            with path.open("rb") as file:
                file.seek(offset)
                return file.read()
        except FileNotFoundError:
            raise NotFoundError(f"{uri}: no such file") from None
        except PermissionError:
            raise AccessDeniedError(f"{uri}: permission denied") from None

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A reader (the operator, `llmkube status`) never sees a half-written file.
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)

    def exists(self, uri: str) -> bool:
        return local_path(uri).exists()

    def list(self, prefix: str) -> list[str]:
        root = local_path(prefix)
        if root.is_file():
            return [prefix]
        if not root.is_dir():
            return []
        return sorted(
            "file://" + str(path)
            for path in root.rglob("*")
            if path.is_file() and not path.name.startswith(".tmp-")
        )

    def list_info(self, prefix: str) -> builtins.list[ObjectInfo]:
        infos = []
        for uri in self.list(prefix):
            digest = hashlib.md5(usedforsecurity=False)
            with local_path(uri).open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            infos.append(ObjectInfo(uri, local_path(uri).stat().st_size, digest.hexdigest()))
        return infos

    def delete(self, uri: str) -> None:
        path = local_path(uri)
        if path.is_dir():
            shutil.rmtree(path)
            return
        path.unlink(missing_ok=True)
        # Object stores have no folders: the last object gone, its folder goes too.
        with contextlib.suppress(OSError):
            path.parent.rmdir()


class S3Store:
    """s3:// URIs on MinIO or any S3-compatible endpoint."""

    def __init__(
        self,
        endpoint: str,
        *,
        access_key: str | None,
        secret_key: str | None,
        secure: bool,
        region: str | None = None,
        retry_for_seconds: float = 60.0,
        timeout_seconds: float = 60.0,
    ) -> None:
        self.endpoint = endpoint
        self.retry_for_seconds = retry_for_seconds
        # Our own retry loop below handles outages; the client's own retries would stack on it.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(5.0, timeout_seconds), read=timeout_seconds),
            retries=urllib3.Retry(total=0, connect=0, read=0, redirect=0),
            maxsize=16,
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )

    def _call(self, uri: str, action: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.retry_for_seconds
        delay = 0.2
        while True:
            try:
                return action()
            except S3Error as error:
                if error.code in _NOT_FOUND:
                    raise NotFoundError(f"{uri}: {error.code} on {self.endpoint}") from None
                if error.code in _DENIED:
                    raise AccessDeniedError(
                        f"{uri}: {error.code} from {self.endpoint}; check the access key pair in "
                        "the credentials Secret and the bucket policy"
                    ) from None
                if error.code not in _TRANSIENT or time.monotonic() > deadline:
                    raise StorageError(f"{uri}: {error.code}: {error.message}") from None
            except (urllib3.exceptions.HTTPError, OSError) as error:
                if time.monotonic() > deadline:
                    raise StorageUnavailableError(
                        f"{uri}: cannot reach {self.endpoint} after {self.retry_for_seconds:.0f}s "
                        f"({type(error).__name__}); check storage.endpoint and that it is up"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def read_bytes(self, uri: str) -> bytes:
        location = parse_s3(uri)

        def read() -> bytes:
            response = self.client.get_object(location.bucket, location.key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._call(uri, read)

    def read_from(self, uri: str, offset: int) -> bytes:
        location = parse_s3(uri)

        def read() -> bytes:
            try:
                response = self.client.get_object(location.bucket, location.key, offset=offset)
            except S3Error as error:
                if error.code == "InvalidRange":  # the offset is at or past the end
                    return b""
                raise
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._call(uri, read)

    def read_tail(self, uri: str, max_bytes: int) -> tuple[bytes, bool]:
        location = parse_s3(uri)

        def read() -> tuple[bytes, bool]:
            size = self.client.stat_object(location.bucket, location.key).size or 0
            offset = max(0, size - max_bytes)
            response = self.client.get_object(location.bucket, location.key, offset=offset)
            try:
                return bytes(response.read()), offset > 0
            finally:
                response.close()
                response.release_conn()

        return self._call(uri, read)

    def write_bytes(self, uri: str, data: bytes) -> None:
        location = parse_s3(uri)

        def write() -> None:
            # S3 PUTs are atomic: readers see the old object or the new one.
            self.client.put_object(location.bucket, location.key, io.BytesIO(data), len(data))

        self._call(uri, write)

    def exists(self, uri: str) -> bool:
        location = parse_s3(uri)
        try:
            self._call(uri, lambda: self.client.stat_object(location.bucket, location.key))
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        location = parse_s3(prefix)

        def listing() -> list[str]:
            objects: Iterator[object] = self.client.list_objects(
                location.bucket, prefix=location.key, recursive=True
            )
            return sorted(f"s3://{location.bucket}/{obj.object_name}" for obj in objects)  # type: ignore[attr-defined]

        return self._call(prefix, listing)

    def list_info(self, prefix: str) -> builtins.list[ObjectInfo]:
        location = parse_s3(prefix)

        def listing() -> builtins.list[ObjectInfo]:
            objects: Iterator[Any] = self.client.list_objects(
                location.bucket, prefix=location.key, recursive=True
            )
            return sorted(
                (
                    ObjectInfo(
                        f"s3://{location.bucket}/{obj.object_name}",
                        obj.size or 0,
                        (obj.etag or "").strip('"'),
                    )
                    for obj in objects
                ),
                key=lambda info: info.uri,
            )

        return self._call(prefix, listing)

    def delete(self, uri: str) -> None:
        location = parse_s3(uri)
        self._call(uri, lambda: self.client.remove_object(location.bucket, location.key))


def s3_endpoint(uri: str, config: StorageConfig, env: Mapping[str, str]) -> tuple[str, bool]:
    """The host:port an s3:// URI is reached at, and whether over TLS."""
    endpoint = config.endpoint or env.get("LLMKUBE_S3_ENDPOINT")
    if not endpoint:
        raise StorageError(
            f"{uri}: no S3 endpoint; set storage.endpoint in the manifest or LLMKUBE_S3_ENDPOINT"
        )
    secure = not config.insecure
    if "://" in endpoint:
        scheme, _, endpoint = endpoint.partition("://")
        secure = scheme == "https"
    return endpoint.rstrip("/"), secure


def open_store(
    uri: str,
    config: StorageConfig | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    retry_for_seconds: float = 60.0,
    timeout_seconds: float = 60.0,
) -> ObjectStore:
    """The store for a URI's scheme; credentials come from the environment variables the config
    names (the operator puts them there from the user's Secret), never from the config itself.
    `timeout_seconds` bounds each request (an endpoint that accepts and never answers), and
    `retry_for_seconds` the retries of failed ones."""
    if uri.startswith("file://"):
        return LocalStore()
    if not uri.startswith("s3://"):
        raise StorageError(f"{uri}: unsupported scheme; use s3:// or file://")
    config = config or StorageConfig()
    env = os.environ if environ is None else environ
    endpoint, secure = s3_endpoint(uri, config, env)
    return S3Store(
        endpoint,
        access_key=env.get(config.access_key_env),
        secret_key=env.get(config.secret_key_env),
        secure=secure,
        region=config.region,
        retry_for_seconds=retry_for_seconds,
        timeout_seconds=timeout_seconds,
    )
