"""The autoscaler against a real Prometheus scraping a real exporter whose value the test sets."""

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from llmkube.testing.black_hole import BlackHole
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.manifests import deployment_manifest, training_job_manifest
from llmkube.testing.operator import OperatorProcess
from llmkube.testing.processes import free_port
from llmkube.testing.prometheus import PrometheusServer
from tests.cluster.helpers import apply, eventually, get, patch_status, wait_phase

UP_WINDOW = 6
DOWN_WINDOW = 10
INTERVAL = 1
# The window counts from the last low *sample* (one per INTERVAL) and decision times are stored
# to the second, so "not before the window" allows for both.
EARLIEST = UP_WINDOW - INTERVAL - 1
# Only "not before the window" is checked: a busy machine can delay a decision, never hasten
# it, so a bound on lateness would be a test of the machine's load (eventually's timeout still
# ends a test whose decision never comes).


class Exporter:
    """What a serving replica would export: in-flight requests of one deployment."""

    def __init__(self, namespace: str, deployment: str) -> None:
        self.port = free_port()
        registry = CollectorRegistry()
        gauge = Gauge(
            "ray_llmkube_requests_in_flight",
            "Requests in flight",
            ["namespace", "deployment"],
            registry=registry,
        )
        self.value = gauge.labels(namespace=namespace, deployment=deployment)
        self.server, self.thread = start_http_server(self.port, "127.0.0.1", registry=registry)

    def set(self, value: float) -> float:
        self.value.set(value)
        return time.time()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def exporter(namespace: str) -> Iterator[Exporter]:
    served = Exporter(namespace, "busy")
    yield served
    served.stop()


@pytest.fixture
def prometheus(exporter: Exporter) -> Iterator[PrometheusServer]:
    with PrometheusServer.start([f"127.0.0.1:{exporter.port}"]) as server:
        yield server


def autoscaled(prometheus_url: str, name: str = "busy") -> dict[str, Any]:
    return deployment_manifest(
        name,
        replicas=1,
        autoscaling={
            "enabled": True,
            "minReplicas": 1,
            "maxReplicas": 4,
            "metric": {"type": "inflightRequests", "target": 5},
            "prometheus": {"url": prometheus_url},
            "intervalSeconds": INTERVAL,
            "scaleUp": {"stabilizationSeconds": UP_WINDOW, "maxStep": 4},
            "scaleDown": {"stabilizationSeconds": DOWN_WINDOW, "maxStep": 4},
        },
    )


def decisions(cp: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    status = get(cp, "llmd", "busy", namespace).get("status") or {}
    history: list[dict[str, Any]] = (status.get("autoscaling") or {}).get("history") or []
    return history


def replicas(cp: ControlPlane, namespace: str) -> int:
    return int(get(cp, "llmd", "busy", namespace)["spec"]["replicas"])


def scaling_condition(cp: ControlPlane, namespace: str) -> dict[str, Any]:
    conditions = (get(cp, "llmd", "busy", namespace).get("status") or {}).get("conditions") or []
    found: list[dict[str, Any]] = [c for c in conditions if c["type"] == "ScalingActive"]
    assert found, conditions
    return found[0]


def seconds_since(iso: str, then: float) -> float:
    at = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return at.timestamp() - then


def test_scales_on_sustained_load_ignores_short_bursts_and_holds_when_blind(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    exporter: Exporter,
    prometheus: PrometheusServer,
) -> None:
    exporter.set(4)  # one replica's worth: 4 in flight against 5 per replica
    apply(control_plane, namespace, autoscaled(prometheus.url))
    eventually(lambda: _stable(control_plane, namespace), timeout=30)
    assert replicas(control_plane, namespace) == 1

    # A step up: 18 in flight asks for 4 replicas, once the scale-up window has seen only that.
    stepped = exporter.set(18)
    eventually(lambda: _replicas_are(control_plane, namespace, 4), timeout=UP_WINDOW + 20)
    up = decisions(control_plane, namespace)[-1]
    assert (up["fromReplicas"], up["toReplicas"]) == (1, 4)
    waited = seconds_since(up["time"], stepped)
    assert waited >= EARLIEST, f"scaled up {waited:.1f}s after the step: before the window"

    # A drop scales down only once the longer scale-down window has seen only low load.
    dropped = exporter.set(2)
    time.sleep(DOWN_WINDOW - INTERVAL - 2)
    assert replicas(control_plane, namespace) == 4, "scaled down inside the scale-down window"
    eventually(lambda: _replicas_are(control_plane, namespace, 1), timeout=DOWN_WINDOW + 20)
    down = decisions(control_plane, namespace)[-1]
    assert (down["fromReplicas"], down["toReplicas"]) == (4, 1)
    assert seconds_since(down["time"], dropped) >= DOWN_WINDOW - INTERVAL - 1

    # Bursts far shorter than the scale-up window: no decision at all. Each lull lasts until the
    # operator has seen it (its status reports the low value), however busy the machine.
    before = len(decisions(control_plane, namespace))
    for _ in range(6):
        exporter.set(18)
        time.sleep(1.0)
        exporter.set(2)
        eventually(lambda: _metric_is(control_plane, namespace, 2), timeout=30, interval=0.1)
    exporter.set(4)
    assert len(decisions(control_plane, namespace)) == before
    assert replicas(control_plane, namespace) == 1

    # Prometheus down: no change, and a condition that says why.
    prometheus.pause()
    try:
        exporter.set(18)

        def blind() -> None:
            condition = scaling_condition(control_plane, namespace)
            assert (condition["status"], condition["reason"]) == ("False", "PrometheusUnavailable")

        eventually(blind, timeout=20)
        time.sleep(UP_WINDOW + 2)
        assert replicas(control_plane, namespace) == 1
    finally:
        prometheus.resume()

    events = control_plane.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "ScaledUp" in events
    assert "ScaledDown" in events


def _stable(cp: ControlPlane, namespace: str) -> None:
    condition = scaling_condition(cp, namespace)
    assert (condition["status"], condition["reason"]) == ("True", "Stable"), condition


def _metric_is(cp: ControlPlane, namespace: str, value: float) -> None:
    status = get(cp, "llmd", "busy", namespace).get("status") or {}
    assert (status.get("autoscaling") or {}).get("metricValue") == value, status


def _replicas_are(cp: ControlPlane, namespace: str, count: int) -> None:
    assert replicas(cp, namespace) == count


def test_endpoints_that_never_answer_delay_no_other_deployment(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    exporter: Exporter,
    prometheus: PrometheusServer,
) -> None:
    """Another user's Prometheus and S3 accept connections and never answer. Their objects wait
    out their own short deadlines; this deployment scales as if they were not there."""
    with BlackHole() as hole:
        apply(control_plane, namespace, autoscaled(f"http://{hole.address}", name="stuck"))
        stuck_job = training_job_manifest(
            "stuck-job", storage={"endpoint": hole.address, "insecure": True}
        )
        apply(control_plane, namespace, stuck_job)
        eventually(lambda: get(control_plane, "rayjob", "stuck-job", namespace))
        # Written as KubeRay would: the exporter behind this module's Prometheus labels its
        # series with this (non-fleet) namespace, where no KubeRay runs.
        running = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}
        patch_status(control_plane, "rayjob", "stuck-job", namespace, running)
        # Running: its progress is read, each read waiting out its deadline (a 60 s one, before).
        wait_phase(control_plane, "ltj", "stuck-job", namespace, "Running", timeout=90)

        def both_hanging() -> None:  # progress reads and metric queries, each held open
            assert hole.accepted >= 3, hole.accepted

        eventually(both_hanging, timeout=30)

        exporter.set(4)
        apply(control_plane, namespace, autoscaled(prometheus.url))
        eventually(lambda: _stable(control_plane, namespace), timeout=30)
        exporter.set(18)
        # Before, each tick waited out the black holes in turn (a 60 s read of S3 every
        # progress interval): the scale-up came a minute late.
        eventually(lambda: _replicas_are(control_plane, namespace, 4), timeout=UP_WINDOW + 20)

        def stuck_is_reported() -> None:
            conditions = get(control_plane, "llmd", "stuck", namespace)["status"]["conditions"]
            scaling = next(c for c in conditions if c["type"] == "ScalingActive")
            assert scaling["reason"] == "PrometheusUnavailable", scaling

        eventually(stuck_is_reported, timeout=30)
