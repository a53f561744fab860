"""The console's view of a cluster: LLMTrainingJob and LLMDeployment objects and their Events
from the Kubernetes API (as the console's read-only ServiceAccount), curves from each job's
output in object storage (with the console's own storage credentials, from its environment as
for the operator: LLMKUBE_S3_ENDPOINT and the access key variables).

The lists are kept in memory and refreshed in the background once they are a couple of seconds
old, so a page never waits for a list of a thousand objects."""

import threading
import time
from typing import Any, cast

from pydantic import ValidationError

from llmkube.api import LLMTrainingJob, LLMTuningJob
from llmkube.api.contract import deployment_series
from llmkube.api.deployment import DEFAULT_MAX_REPLICAS
from llmkube.api.runconfig import (
    TrainingRunConfig,
    TuningRunConfig,
    training_run_config,
    tuning_run_config,
)
from llmkube.api.tuning import BestTrial, TrialCounts, TuningProgress
from llmkube.console.curves import RunCurves
from llmkube.console.hyperparameters import hyperparameters
from llmkube.console.outputs import OutputReader
from llmkube.console.searches import (
    SearchDetail,
    SearchOutput,
    SearchRow,
    read_search_output,
    search_detail,
    search_row,
)
from llmkube.console.source import (
    Condition,
    DeploymentRow,
    Event,
    JobDetail,
    JobQuery,
    JobRow,
    JobsPage,
    Visible,
    everywhere,
    page_of,
)
from llmkube.storage import StorageError, open_store

GROUP, VERSION = "llmkube.io", "v1alpha1"
REFRESH_SECONDS = 2.0
EVENTS_SHOWN = 30
STORAGE_TIMEOUT_SECONDS = 5.0
SERVING_PHASES = ("Ready", "Degraded")


class _Listing:
    """One kind's objects, served from memory, refreshed in the background when stale."""

    def __init__(self, fetch: Any, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self._fetch = fetch
        self._refresh_seconds = refresh_seconds
        self._items: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._refreshing = False
        self._lock = threading.Lock()

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            items, stale = self._items, time.monotonic() - self._fetched_at > self._refresh_seconds
            start = stale and items is not None and not self._refreshing
            if start:
                self._refreshing = True
        if items is None:
            return self._refresh()
        if start:
            threading.Thread(target=self._refresh, daemon=True).start()
        return items

    def _refresh(self) -> list[dict[str, Any]]:
        try:
            items: list[dict[str, Any]] = self._fetch()["items"]
        finally:
            with self._lock:
                self._refreshing = False
        with self._lock:
            self._items, self._fetched_at = items, time.monotonic()
        return items


class KubeSource:
    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self.outputs = OutputReader()
        self._jobs = _Listing(lambda: self._list("llmtrainingjobs"))
        self._deployments = _Listing(lambda: self._list("llmdeployments"))
        self._searches = _Listing(lambda: self._list("llmtuningjobs"))

    def _list(self, plural: str) -> dict[str, Any]:
        listed = self._custom.list_cluster_custom_object(GROUP, VERSION, plural)
        return cast(dict[str, Any], listed)

    def jobs(self, query: JobQuery) -> JobsPage:
        return page_of([job_row(raw) for raw in self._jobs.items()], query)

    def job(self, namespace: str, name: str) -> JobDetail | None:
        raw = self._get("llmtrainingjobs", namespace, name)
        if raw is None:
            return None
        status = raw.get("status") or {}
        config = _run_config(raw)
        model = status.get("model") or {}
        return JobDetail(
            row=job_row(raw),
            output=config.output if config else (raw.get("spec") or {}).get("output", ""),
            model_uri=model.get("uri"),
            message=status.get("message") or "",
            hyperparameters=hyperparameters(config) if config else {},
            conditions=[
                Condition(
                    c.get("type", ""),
                    c.get("status", ""),
                    c.get("reason", ""),
                    c.get("message", ""),
                )
                for c in status.get("conditions") or []
            ],
            events=self._events(namespace, name, "LLMTrainingJob"),
        )

    def curves(self, namespace: str, name: str) -> RunCurves:
        raw = self._get("llmtrainingjobs", namespace, name)
        config = _run_config(raw) if raw else None
        if config is None:
            return RunCurves()
        try:
            store = open_store(
                config.output,
                config.storage,
                retry_for_seconds=0,
                timeout_seconds=STORAGE_TIMEOUT_SECONDS,
            )
            return self.outputs.curves(store, config.output)
        except StorageError:
            return RunCurves()

    def deployments(self, visible: Visible = everywhere) -> list[DeploymentRow]:
        rows = [deployment_row(raw) for raw in self._deployments.items()]
        return sorted(
            (row for row in rows if visible(row.namespace)), key=lambda r: (r.namespace, r.name)
        )

    def deployment(self, namespace: str, name: str) -> DeploymentRow | None:
        raw = self._get("llmdeployments", namespace, name)
        return deployment_row(raw) if raw else None

    def searches(self, visible: Visible = everywhere) -> list[SearchRow]:
        rows = [row for raw in self._searches.items() if (row := search_listing_row(raw))]
        return sorted(
            (row for row in rows if visible(row.namespace)), key=lambda r: (r.namespace, r.name)
        )

    def search(self, namespace: str, name: str) -> SearchDetail | None:
        raw = self._get("llmtuningjobs", namespace, name)
        config = _tuning_config(raw) if raw else None
        if raw is None or config is None:
            return None
        try:
            store = open_store(
                config.output,
                config.storage,
                retry_for_seconds=0,
                timeout_seconds=STORAGE_TIMEOUT_SECONDS,
            )
        except StorageError as error:
            found = SearchOutput(None, [], error=str(error))
        else:
            found = read_search_output(store, config.output)
        status = raw.get("status") or {}
        row = search_listing_row(raw)
        assert row is not None, "its run config was read"
        return search_detail(row, config, found, status.get("message") or "")

    def _get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    def _events(self, namespace: str, name: str, kind: str) -> list[Event]:
        listed = self._core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}"
        )
        events = [
            Event(
                type=item.type or "",
                reason=item.reason or "",
                message=item.message or "",
                time=_time(item.last_timestamp or item.event_time or item.first_timestamp),
            )
            for item in listed.items
        ]
        return sorted(events, key=lambda e: e.time, reverse=True)[:EVENTS_SHOWN]


def job_row(raw: dict[str, Any]) -> JobRow:
    metadata, status = raw.get("metadata") or {}, raw.get("status") or {}
    progress, metrics = status.get("progress") or {}, status.get("metrics") or {}
    return JobRow(
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace", ""),
        phase=status.get("phase") or "Pending",
        step=progress.get("step") or 0,
        total_steps=progress.get("totalSteps") or 0,
        train_loss=metrics.get("trainLoss"),
        eval_loss=metrics.get("evalLoss"),
        tokens_per_second=metrics.get("tokensPerSecond"),
        eta_s=progress.get("etaSeconds"),
        created=metadata.get("creationTimestamp") or "",
    )


def deployment_row(raw: dict[str, Any]) -> DeploymentRow:
    metadata, spec, status = (
        raw.get("metadata") or {},
        raw.get("spec") or {},
        raw.get("status") or {},
    )
    served = status.get("model") or {}
    autoscaling = spec.get("autoscaling") or {}
    replicas = status.get("desiredReplicas") or spec.get("replicas") or 0
    return DeploymentRow(
        name=metadata.get("name", ""),
        namespace=metadata.get("namespace", ""),
        phase=status.get("phase") or "Pending",
        model_uri=served.get("uri") or "",
        endpoint=status.get("endpoint") if status.get("phase") in SERVING_PHASES else None,
        ready_replicas=status.get("readyReplicas") or 0,
        replicas=replicas,
        max_replicas=(
            autoscaling.get("maxReplicas", DEFAULT_MAX_REPLICAS)
            if autoscaling.get("enabled")
            else replicas
        ),
        adapters=[adapter.get("name", "") for adapter in status.get("adapters") or []],
        model_version=status.get("liveModelVersion") or served.get("version"),
        needs_api_key=bool((spec.get("serving") or {}).get("apiKeySecret")),
        series=deployment_series(metadata.get("namespace", ""), metadata.get("name", "")),
        decisions=[
            f"{d.get('time', '')}: {d.get('fromReplicas')} → {d.get('toReplicas')} "
            f"({d.get('reason', '')})"
            for d in reversed(((status.get("autoscaling") or {}).get("history") or [])[-3:])
        ],
    )


def search_listing_row(raw: dict[str, Any]) -> SearchRow | None:
    """A search's row from its object alone (the status carries its counts and best trial)."""
    config = _tuning_config(raw)
    if config is None:
        return None
    metadata, status = raw.get("metadata") or {}, raw.get("status") or {}
    try:
        progress = TuningProgress(
            trials=TrialCounts.model_validate(status.get("trials") or {}),
            best_trial=(
                BestTrial.model_validate(status["bestTrial"]) if status.get("bestTrial") else None
            ),
            updated_at="",
        )
    except ValidationError:
        progress = None
    return search_row(
        metadata.get("name", ""),
        metadata.get("namespace", ""),
        status.get("phase") or "Pending",
        config,
        progress,
    )


def _tuning_config(raw: dict[str, Any]) -> TuningRunConfig | None:
    try:
        return tuning_run_config(LLMTuningJob.model_validate(raw))
    except ValidationError:
        return None


def _run_config(raw: dict[str, Any]) -> TrainingRunConfig | None:
    """The run config the operator builds for the job; None for a spec it would refuse."""
    try:
        return training_run_config(LLMTrainingJob.model_validate(raw))
    except (ValidationError, ValueError):
        return None


def _time(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""
