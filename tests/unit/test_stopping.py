"""The stop protocol (llmkube.stopping, llmkube.local.stop_requests) with real signals and real
processes, no Ray: handlers installed whatever was inherited, exit codes, escalation, and a child
that stops when its parent is SIGKILLed."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llmkube.local.child import Child, session_processes
from llmkube.local.stop_requests import StopRequests
from llmkube.stopping import (
    PARENT_PID_ENV,
    STOP_SIGNALS,
    Stopped,
    exit_code,
    raise_on_stop_signals,
)

# A stand-in entrypoint: the same two calls the real ones make first, then it waits.
ENTRYPOINT = """
import sys, time
from llmkube.stopping import exit_code, raise_on_stop_signals, signal_name, stop_signal
from llmkube.stopping import stop_with_parent
raise_on_stop_signals()
try:
    stop_with_parent()
    print("ready", flush=True)
    while True:
        time.sleep(1)
except KeyboardInterrupt as interrupt:
    print(f"stopped by {signal_name(stop_signal(interrupt))}", flush=True)
    sys.exit(exit_code(stop_signal(interrupt)))
"""


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """Put this process's handlers back after a test that installs its own."""
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def signal_self_and_wait(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(5)


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_exit_codes_are_those_a_shell_reports(signum: int, code: int) -> None:
    assert exit_code(signum) == code
    assert Stopped(signum).exit_code == code


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=[s.name for s in STOP_SIGNALS])
@pytest.mark.usefixtures("own_handlers")
def test_each_stop_signal_raises_stopped_even_when_inherited_as_ignored(signum: int) -> None:
    signal.signal(signum, signal.SIG_IGN)  # as a background job of a script inherits SIGINT
    raise_on_stop_signals()
    with pytest.raises(Stopped) as stopped:
        signal_self_and_wait(signum)
    assert stopped.value.signum == signum


@pytest.mark.usefixtures("own_handlers")
def test_a_stop_request_is_a_flag_and_a_second_one_kills_the_watched_sessions(
    tmp_path: Path,
) -> None:
    stops = StopRequests.install()
    assert not stops.wait(0.05)
    stops.check()  # nothing requested: no exception
    # `sh` starts `sleep` in the same session, as an entrypoint starts Ray.
    child = stops.watch(Child(["sh", "-c", "sleep 60 & sleep 60"], tmp_path / "child.log"))
    try:
        assert wait_for(lambda: len(session_processes(child.process.pid)) >= 2, 5)
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.wait(5)
        assert time.monotonic() - started < 1
        assert stops.signum == signal.SIGTERM
        assert child.poll() is None, "the first signal only asks"
        with pytest.raises(Stopped) as stopped:
            stops.check()
        assert stopped.value.exit_code == 143
        os.kill(os.getpid(), signal.SIGHUP)
        assert wait_for(lambda: not session_processes(child.process.pid), 5)
        assert child.process.wait(5) == -signal.SIGKILL
        assert stops.signum == signal.SIGTERM, "the first signal decides the exit code"
    finally:
        child.kill_session()


def test_a_child_stops_itself_when_its_parent_is_killed(tmp_path: Path) -> None:
    # The parent is a real process that starts the entrypoint through Child, as `llmkube run`
    # does, then waits; the test SIGKILLs it, so no code of the parent runs afterwards.
    log = tmp_path / "entrypoint.log"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from llmkube.local.child import Child\n"
            f"child = Child([sys.executable, '-c', {ENTRYPOINT!r}], Path({str(log)!r}))\n"
            "print(child.process.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert wait_for(lambda: "ready" in log.read_text(), 30), log.read_text()
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not session_processes(child_pid), 10), log.read_text()
        assert "stopped by SIGTERM" in log.read_text()
    finally:
        parent.kill()
        for pid in session_processes(child_pid):
            os.kill(pid, signal.SIGKILL)


def test_a_child_whose_parent_is_already_gone_stops_at_once(tmp_path: Path) -> None:
    # The parent named in the environment is not this child's parent: it died before the child
    # asked the kernel to watch it, and the child was handed to another process.
    result = subprocess.run(
        [sys.executable, "-c", ENTRYPOINT],
        env={**os.environ, PARENT_PID_ENV: str(2**22 + 1)},  # above any pid Linux gives
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 143, result.stdout + result.stderr
    assert "ready" not in result.stdout
    assert "stopped by SIGTERM" in result.stdout


def test_the_signal_survives_ray_turning_the_interrupt_into_a_plain_one() -> None:
    # Ray's blocking calls catch the KeyboardInterrupt a handler raises and raise a new, plain
    # one: the exit code must still come from the signal taken.
    script = (
        "import os, signal, sys, time\n"
        "from llmkube.stopping import exit_code, raise_on_stop_signals, stop_signal\n"
        "raise_on_stop_signals()\n"
        "try:\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGHUP)\n"
        "        time.sleep(5)\n"
        "    except KeyboardInterrupt:\n"
        "        raise KeyboardInterrupt from None\n"
        "except KeyboardInterrupt as interrupt:\n"
        "    sys.exit(exit_code(stop_signal(interrupt)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=30, check=False)
    assert result.returncode == 129


def test_ray_train_still_has_the_sigint_hook_the_training_driver_replaces() -> None:
    # Contract with the pinned Ray: DataParallelTrainer installs its SIGINT handler (abort the
    # run, exit 0) through this method during fit; llmkube.runtime.train.Trainer overrides it so
    # that SIGINT stops the driver as SIGTERM does. A Ray that renames it fails here, not silently.
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    from llmkube.runtime.train import Trainer

    assert issubclass(TorchTrainer, DataParallelTrainer)
    assert callable(DataParallelTrainer._register_sigint_handler)
    assert "_register_sigint_handler" in vars(Trainer)
