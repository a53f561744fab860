"""The API keys a replica accepts.

A Secret's value may hold several keys, one per line (or separated by spaces or commas): a new
key is added next to the old one, clients move over, and the old one is removed, with no moment
where neither works. Whitespace around a key (a trailing newline from `echo > file`) is never
part of it.

On a cluster the Secret is mounted as a file, which the kubelet keeps current, so a rotation
reaches running replicas without a restart: the file is read again when it changes. Locally the
keys come from an environment variable, read once.
"""

import hmac
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

from llmkube.api.runconfig import ServeRunConfig

_SEPARATORS = re.compile(r"[\s,]+")


class NoApiKeysError(Exception):
    """Authentication is required but the source holds no key."""


def parse_keys(text: str) -> frozenset[str]:
    return frozenset(key for key in _SEPARATORS.split(text) if key)


class ApiKeys:
    """Checks a presented key against the current set, in constant time per key."""

    def __init__(self, read: Callable[[], str], *, source: str, changes: Callable[[], object]):
        self._read = read
        self._changes = changes
        self.source = source
        self._lock = threading.Lock()
        self._seen: object = None
        self._keys: frozenset[str] = frozenset()
        self._refresh()
        if not self._keys:
            raise NoApiKeysError(f"{source} holds no API key")

    @classmethod
    def from_file(cls, path: Path) -> "ApiKeys":
        def stamp() -> object:
            # The kubelet swaps a `..data` symlink: the resolved file's identity changes.
            try:
                stat = path.stat()
            except OSError:
                return None
            return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

        def read() -> str:
            try:
                return path.read_text()
            except OSError as error:
                raise NoApiKeysError(f"cannot read the API keys at {path}: {error}") from None

        return cls(read, source=str(path), changes=stamp)

    @classmethod
    def from_env(cls, name: str) -> "ApiKeys":
        value = os.environ.get(name, "")
        return cls(lambda: value, source=f"${name}", changes=lambda: None)

    def _refresh(self) -> None:
        stamp = self._changes()
        if stamp == self._seen and self._keys:
            return
        with self._lock:
            keys = parse_keys(self._read())
            if keys:  # a file caught mid-update keeps the previous keys
                self._keys, self._seen = keys, stamp

    def accepts(self, presented: str) -> bool:
        self._refresh()
        candidate = presented.strip().encode()
        # Compare with every key, so the time taken does not tell which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key.encode())
        return matched


def api_keys_for(run: ServeRunConfig) -> ApiKeys | None:
    """The keys a replica of `run` accepts; None serves without authentication."""
    try:
        if run.api_key_file is not None:
            return ApiKeys.from_file(Path(run.api_key_file))
        if run.api_key_env is not None:
            return ApiKeys.from_env(run.api_key_env)
    except NoApiKeysError as error:
        raise RuntimeError(
            f"serving.apiKeySecret is set but {error}; check the Secret and the key it names"
        ) from None
    return None
