"""Test tiers follow the folder a test lives in: tests/unit, tests/runtime, tests/cluster."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkube.testing.minio import MinioServer

TIERS = ("unit", "runtime", "cluster")
DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def minio() -> Iterator[MinioServer]:
    """A real MinIO server for the session (started only if a test asks for it)."""
    with MinioServer.start() as server:
        yield server


@pytest.fixture
def bucket(minio: MinioServer) -> str:
    """A fresh, empty bucket per test."""
    name = f"t-{secrets.token_hex(6)}"
    minio.make_bucket(name)
    return name
