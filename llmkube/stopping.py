"""How `llmkube run` and the entrypoints it starts (`python -m llmkube.runtime.train` / `serve`)
stop. Both sides of the protocol live here because both must agree on it:

- SIGINT, SIGTERM and SIGHUP each stop a process the way Ctrl-C does, whatever dispositions it
  inherited (a background job of a non-interactive shell inherits SIGINT *ignored*).
- `llmkube run` and the training entrypoint, stopped by signal N, exit 128 + N (130 for
  SIGINT, 143 for SIGTERM), as a shell reports a process killed by that signal; the serving
  entrypoint exits 0, since a server asked to stop that did has done its job.
- An entrypoint started by `llmkube run` (or a test harness) stops when the process that started
  it dies, even by SIGKILL: the parent names itself in `PARENT_PID_ENV`, and the entrypoint asks
  the kernel for a SIGTERM when that parent goes (Linux's parent-death signal).

docs/stopping.md says which signal does what.
"""

import ctypes
import os
import signal
import sys
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PARENT_PID_ENV = "LLMKUBE_STOP_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def exit_code(signum: int) -> int:
    return 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Stopped(KeyboardInterrupt):
    """A stop signal arrived. A KeyboardInterrupt because that is what Ray's blocking calls
    (`ray.get` in the driver) pass on from a signal handler, and no `except Exception` on the
    way up swallows it. Ray re-raises it as a plain KeyboardInterrupt: `stop_signal` tells which
    signal it was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


_first_taken: int | None = None


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    global _first_taken
    if _first_taken is None:
        _first_taken = signum
    raise Stopped(signum)


def stop_signal(interrupt: KeyboardInterrupt) -> int:
    """The signal behind an interrupt caught in an entrypoint: the first one taken."""
    if _first_taken is not None:
        return _first_taken
    return interrupt.signum if isinstance(interrupt, Stopped) else signal.SIGINT


def raise_on_stop_signals() -> None:
    """Make each stop signal raise `Stopped` in the main thread. Call it again after
    `ray.init`, which installs a SIGTERM handler of its own."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stopped)


def ignore_stop_signals() -> None:
    """While shutting down: a second signal must not abort the shutdown half-way. Whoever
    insists kills the session (`llmkube run` does on a second signal)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def parent_env() -> dict[str, str]:
    """What a parent puts in a child's environment so that the child stops with it. The
    kernel's parent-death signal follows the *thread* that started the child: start it from
    the main thread."""
    return {PARENT_PID_ENV: str(os.getpid())}


def stop_with_parent() -> None:
    """SIGTERM this process when the parent named in `PARENT_PID_ENV` dies (Linux only; a
    no-op elsewhere or when the variable is unset); raises `Stopped` if it is gone already."""
    parent = os.environ.pop(PARENT_PID_ENV, None)  # Ray's processes must not inherit it
    if parent is None or not sys.platform.startswith("linux"):
        return
    parent_death_signal(signal.SIGTERM)
    if os.getppid() != int(parent):
        # The parent died before the kernel was asked to tell us.
        _raise_stopped(signal.SIGTERM, None)


def parent_death_signal(signum: int) -> None:
    """Ask Linux to send `signum` to this process when its parent thread exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signum) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
