"""Which of Ray's processes local serving moves to SCHED_IDLE."""

import os
from pathlib import Path

import pytest

from llmkube.runtime.daemons import ProcessEntry, daemons_to_idle, descendants, running_processes

RAYLET = "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet"
DRIVER = 100
# The tree `python -m llmkube.runtime.serve` grows, as /proc shows it.
TREE = {
    1: ProcessEntry(0, "/sbin/init"),
    99: ProcessEntry(1, "bash"),
    DRIVER: ProcessEntry(99, "/venv/bin/python"),
    101: ProcessEntry(DRIVER, "/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server"),
    102: ProcessEntry(DRIVER, "/venv/bin/python"),  # the dashboard
    103: ProcessEntry(102, "ray-dashboard-JobHead-0"),
    104: ProcessEntry(DRIVER, "/venv/bin/python"),  # the log monitor
    105: ProcessEntry(DRIVER, RAYLET),
    106: ProcessEntry(105, "ray::DashboardAgent"),
    107: ProcessEntry(105, "ray::RuntimeEnvAgent"),
    108: ProcessEntry(105, "ray::ServeController"),
    109: ProcessEntry(105, "ray::ProxyActor"),
    110: ProcessEntry(105, "ray::ServeReplica:llm:LLMServer"),
    111: ProcessEntry(105, "ray::ServeReplica:llm:LLMServer"),
    112: ProcessEntry(105, "ray::IDLE"),
    200: ProcessEntry(99, "/venv/bin/python"),  # somebody else's program
}
DAEMONS = [DRIVER, 101, 102, 103, 104, 106, 107, 108]


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        ((), [*DAEMONS, 109]),
        (("ray::ProxyActor",), DAEMONS),
        (("ray::ProxyActor", "ray::DashboardAgent"), [p for p in DAEMONS if p != 106]),
    ],
)
def test_daemons_are_the_drivers_tree_less_raylet_and_workers(
    keep: tuple[str, ...], expected: list[int]
) -> None:
    assert daemons_to_idle(TREE, DRIVER, keep) == expected


def test_a_kept_process_keeps_its_children() -> None:
    tree = {**TREE, 113: ProcessEntry(110, "/venv/bin/python")}
    assert 113 not in daemons_to_idle(tree, DRIVER)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_this_process_is_found_with_its_parent() -> None:
    entry = running_processes()[os.getpid()]
    assert entry.parent == os.getppid()
    assert Path(entry.command).name.startswith("python")


def test_descendants_are_the_whole_subtree() -> None:
    assert sorted(descendants(TREE, 102)) == [102, 103]
    assert sorted(descendants(TREE, 105)) == [105, *range(106, 113)]
    assert descendants(TREE, 113) == [113]
