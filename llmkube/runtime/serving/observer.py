"""What the engine reports as it works; the Ray Serve app turns it into Prometheus metrics.
Per-request reports name the request's adapter (None: the model itself)."""

from typing import Protocol


class EngineObserver(Protocol):
    def queue_depth(self, waiting: int) -> None: ...
    def admitted(self, waited_seconds: float) -> None: ...
    def batch_size(self, running: int) -> None: ...
    def first_token(self, seconds: float, adapter: str | None) -> None: ...
    def inter_token(self, seconds: float, adapter: str | None) -> None: ...
    def generated(self, tokens: int, adapter: str | None) -> None: ...


class NullObserver:
    def queue_depth(self, waiting: int) -> None:
        pass

    def admitted(self, waited_seconds: float) -> None:
        pass

    def batch_size(self, running: int) -> None:
        pass

    def first_token(self, seconds: float, adapter: str | None) -> None:
        pass

    def inter_token(self, seconds: float, adapter: str | None) -> None:
        pass

    def generated(self, tokens: int, adapter: str | None) -> None:
        pass
