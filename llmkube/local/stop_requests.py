"""How `llmkube run` takes the stop signals of llmkube.stopping, whatever dispositions it
inherited. The first signal is a request that the runner's loops honour within a tenth of a
second: stop the running child the way Ctrl-C always did (SIGTERM to the entrypoint, which shuts
its Ray cluster down, then whatever is left of its session), print the resume hint, exit 128 + N.
A second signal while that goes on SIGKILLs the children's sessions at once.

The handler never raises: an exception from an arbitrary line could leave a child half-started
or a stop half-done."""

import signal
import time
from types import FrameType
from typing import Self

from llmkube.local.child import Child
from llmkube.stopping import STOP_SIGNALS, Stopped

_SLICE_SECONDS = 0.1


class StopRequests:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._children: list[Child] = []

    @classmethod
    def install(cls) -> Self:
        requests = cls()
        for signum in STOP_SIGNALS:
            signal.signal(signum, requests._handle)
        return requests

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        for child in self._children:
            child.kill_now()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def watch(self, child: Child) -> Child:
        """A second signal kills this child's session at once."""
        self._children.append(child)
        return child

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True as soon as a stop is requested."""
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(min(_SLICE_SECONDS, max(0.0, deadline - time.monotonic())))
        return self.requested

    def check(self) -> None:
        """Raise `Stopped` if a stop was requested: between steps that start no child."""
        if self.signum is not None:
            raise Stopped(self.signum)
