"""Ray's own processes on a machine that serves locally, moved to Linux's SCHED_IDLE policy.

On a small machine torch runs each decode step on every core in lockstep. Whenever a Ray daemon
wakes up (GCS, log monitor, metrics agent, Serve's controller and proxy: about a thousand
wake-ups a second between them, idle), it takes a core from one of torch's threads, and the
whole step waits for that thread. A SCHED_IDLE process runs only on CPU nothing else wants, so
it no longer interrupts the model (benchmarks/README.md, "Serving on two cores").

Kept at normal priority: the raylet, because every worker it starts later inherits its policy
and no unprivileged process can leave SCHED_IDLE again; the replicas and idle workers (a
replica may be started in one); and whatever else the caller keeps, such as Serve's proxy when
requests pass through it.
"""

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

RAYLET = "raylet"
ALWAYS_KEPT = ("ray::IDLE", "ray::ServeReplica")


@dataclass(frozen=True)
class ProcessEntry:
    parent: int
    command: str  # the program name, or the title Ray gives a worker (`ray::ServeController`)


def children_of(processes: Mapping[int, ProcessEntry]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, entry in processes.items():
        children.setdefault(entry.parent, []).append(pid)
    return children


def daemons_to_idle(
    processes: Mapping[int, ProcessEntry], driver: int, keep: Iterable[str] = ()
) -> list[int]:
    """The driver and its descendants, less the raylet itself (not its children), the workers
    and any process whose command starts with one of `keep`, together with its descendants."""
    kept = (*ALWAYS_KEPT, *keep)
    children = children_of(processes)
    chosen, pending = [], [driver]
    while pending:
        pid = pending.pop()
        command = processes[pid].command if pid in processes else ""
        if command.startswith(kept):
            continue
        if Path(command).name != RAYLET:
            chosen.append(pid)
        pending.extend(children.get(pid, []))
    return sorted(chosen)


def descendants(processes: Mapping[int, ProcessEntry], pid: int) -> list[int]:
    """`pid` and every process below it."""
    children = children_of(processes)
    found, pending = [], [pid]
    while pending:
        found.append(pending.pop())
        pending.extend(children.get(found[-1], []))
    return found


def running_processes() -> dict[int, ProcessEntry]:
    """Every process this one can see in /proc."""
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # it exited meanwhile
            continue
        # The second field is the name in parentheses, which may itself hold spaces or ')'.
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        command = argv[0].decode(errors="replace") if argv[0] else stat.split("(", 1)[1][:-1]
        processes[int(entry.name)] = ProcessEntry(parent, command.split(" ")[0])
    return processes


def idle_ray_daemons(keep: Iterable[str] = ()) -> None:
    """Move this driver's Ray daemons to SCHED_IDLE, every thread of each.

    Does nothing where the policy does not exist (outside Linux)."""
    if not hasattr(os, "SCHED_IDLE"):
        return
    for pid in daemons_to_idle(running_processes(), os.getpid(), keep):
        try:
            for thread in os.listdir(f"/proc/{pid}/task"):
                os.sched_setscheduler(int(thread), os.SCHED_IDLE, os.sched_param(0))
        except (ProcessLookupError, FileNotFoundError):  # it exited meanwhile
            continue
