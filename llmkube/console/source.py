"""What the console shows, and the one interface it reads it through. The local data folder
(`llmkube run`) and the Kubernetes API each implement `ConsoleSource`; the pages never know
which one they read."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from llmkube.console.curves import RunCurves
from llmkube.console.searches import SearchDetail, SearchRow


@dataclass(frozen=True)
class JobRow:
    """One line of the jobs page."""

    name: str
    namespace: str
    phase: str
    step: int = 0
    total_steps: int = 0
    train_loss: float | None = None
    eval_loss: float | None = None
    tokens_per_second: float | None = None
    eta_s: float | None = None
    created: str = ""
    """When the job was created or first run (RFC 3339); the jobs page sorts on it."""

    @property
    def percent(self) -> int:
        return int(100 * self.step / self.total_steps) if self.total_steps else 0


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str
    time: str


@dataclass(frozen=True)
class JobDetail:
    row: JobRow
    output: str
    """The job's output URI."""
    model_uri: str | None
    """The published model (`<output>/model`), once there is one."""
    message: str = ""
    hyperparameters: dict[str, str] = field(default_factory=dict)
    """Flattened settings (`training.learningRate` → `0.001`), for the compare page."""
    conditions: list[Condition] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    log_tail: str | None = None
    """The end of the job's log, where the console can reach it."""


@dataclass(frozen=True)
class DeploymentRow:
    name: str
    namespace: str
    phase: str
    model_uri: str
    endpoint: str | None
    """The OpenAI API's base URL (…/v1) the console talks to, None until it serves."""
    ready_replicas: int = 0
    replicas: int = 0
    max_replicas: int = 0
    adapters: list[str] = field(default_factory=list)
    model_version: str | None = None
    series: str = ""
    """The label matchers of its serving series in Prometheus (llmkube.api.contract)."""
    decisions: list[str] = field(default_factory=list)
    """The autoscaler's latest decisions, newest first."""
    needs_api_key: bool = False
    """Whether the endpoint wants a key: the playground asks the person for one (the console
    holds none)."""


@dataclass(frozen=True)
class JobsPage:
    rows: list[JobRow]
    total: int
    """Jobs that match the filter, on every page."""


Visible = Callable[[str], bool]
"""Whether the person looking may list objects of a namespace."""


def everywhere(namespace: str) -> bool:
    return True


@dataclass(frozen=True)
class JobQuery:
    """Which jobs a jobs page shows: names containing `text`, in `phase` (either may be empty),
    in namespaces the viewer may list; newest first, `limit` of them from `offset`."""

    text: str = ""
    phase: str = ""
    offset: int = 0
    limit: int = 50
    visible: Visible = everywhere


class ConsoleSource(Protocol):
    def jobs(self, query: JobQuery) -> JobsPage: ...

    def job(self, namespace: str, name: str) -> JobDetail | None: ...

    def curves(self, namespace: str, name: str) -> RunCurves:
        """Empty curves when the job has logged nothing (or does not exist)."""
        ...

    def deployments(self, visible: Visible = everywhere) -> list[DeploymentRow]: ...

    def deployment(self, namespace: str, name: str) -> DeploymentRow | None: ...

    def searches(self, visible: Visible = everywhere) -> list[SearchRow]: ...

    def search(self, namespace: str, name: str) -> SearchDetail | None: ...


def page_of(rows: list[JobRow], query: JobQuery) -> JobsPage:
    """The filtering, order and paging both sources share."""
    kept = [
        row
        for row in rows
        if query.text.lower() in row.name.lower()
        and (not query.phase or row.phase == query.phase)
        and query.visible(row.namespace)
    ]
    kept.sort(key=lambda row: (row.created, row.namespace, row.name), reverse=True)
    return JobsPage(kept[query.offset : query.offset + query.limit], len(kept))
