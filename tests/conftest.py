"""Test tiers follow the folder a test lives in: tests/unit, tests/runtime, tests/cluster."""

from pathlib import Path

import pytest

TIERS = ("unit", "runtime", "cluster")
DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
