"""A real control plane for the session, with every CRD installed, and a namespace per test."""

import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmkube.testing.binaries import server_binaries, third_party_crds
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.fleet import Fleet
from llmkube.testing.operator import OperatorProcess

ROOT = Path(__file__).parents[2]
CRD_DIR = ROOT / "crds"
CHART = ROOT / "helm" / "llmkube"
OPERATOR_NAMESPACE = "llmkube-system"
RELEASE = "llmkube"
# How the apiserver words an RBAC refusal (other 403s, such as writing into a namespace being
# deleted, say "unable to create new content").
RBAC_DENIAL = re.compile(r'User "[^"]+" cannot ')


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    try:
        begun = time.monotonic()
        plane.install_crds([*third_party_crds(), *sorted(CRD_DIR.glob("*.yaml"))])
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        assert reporter is not None
        assert capture is not None
        with capture.global_and_fixture_disabled():
            reporter.ensure_newline()
            reporter.write_line(
                f"control plane ready in {plane.startup_seconds:.1f}s "
                f"(CRDs installed in {time.monotonic() - begun:.1f}s): "
                + "; ".join(f"{name} {version}" for name, version in plane.versions.items())
            )
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    created = control_plane.kubectl("create", "namespace", name)
    assert created.returncode == 0, created.stderr
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def render_chart(control_plane: ControlPlane, *values: str) -> str:
    result = subprocess.run(
        [
            str(control_plane_helm()),
            "template",
            RELEASE,
            str(CHART),
            f"--namespace={OPERATOR_NAMESPACE}",
            *(f"--set={value}" for value in values),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def chart_identity(control_plane: ControlPlane) -> Path:
    """Install the chart as rendered by helm; a kubeconfig of its ServiceAccount. The operator
    tests run the operator with it, so a verb missing from the chart's ClusterRole fails them."""
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    applied = control_plane.kubectl("apply", "-f", "-", input=render_chart(control_plane))
    assert applied.returncode == 0, applied.stderr
    return control_plane.service_account_kubeconfig(OPERATOR_NAMESPACE, RELEASE)


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, chart_identity: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a subprocess with the chart's identity, polling progress every second."""
    process = OperatorProcess(
        chart_identity,
        tmp_path_factory.mktemp("operator"),
        env={"LLMKUBE_PROGRESS_INTERVAL_SECONDS": "1"},
    ).start()
    yield process
    process.stop()
    # Best-effort calls (Events) only log a refusal; the chart's RBAC must not cause any.
    assert not RBAC_DENIAL.search(process.log()), "the chart's ClusterRole lacks a verb"


def control_plane_helm() -> Path:
    return server_binaries()["helm"]


FLEET_NAMESPACES = 21
"""Namespaces KubeRay's real controller acts in (one per fleet test); elsewhere the tests still
write what KubeRay would."""


@dataclass
class FleetUnderTest:
    fleet: Fleet
    free_namespaces: list[str]


@pytest.fixture(scope="session")
def fleet_under_test(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetUnderTest]:
    """The real kube-scheduler, KubeRay controller and kwok's simulated GPU pools
    (llmkube.testing.fleet), and the namespaces KubeRay watches, handed out one per test."""
    names = [f"fleet-{secrets.token_hex(3)}-{i}" for i in range(FLEET_NAMESPACES)]
    for name in names:
        created = control_plane.kubectl("create", "namespace", name)
        assert created.returncode == 0, created.stderr
    with Fleet.start(control_plane, tmp_path_factory.mktemp("fleet"), namespaces=names) as fleet:
        yield FleetUnderTest(fleet, names)


@pytest.fixture
def fleet(fleet_under_test: FleetUnderTest) -> Fleet:
    return fleet_under_test.fleet


@pytest.fixture
def fleet_namespace(fleet_under_test: FleetUnderTest) -> str:
    free = fleet_under_test.free_namespaces
    assert free, f"more fleet tests than FLEET_NAMESPACES ({FLEET_NAMESPACES})"
    return free.pop()
