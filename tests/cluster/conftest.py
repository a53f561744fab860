"""A real control plane for the session, with every CRD installed, and a namespace per test."""

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkube.testing.binaries import third_party_crds
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.operator import OperatorProcess

CRD_DIR = Path(__file__).parents[2] / "crds"


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


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as a real subprocess, polling progress every second."""
    process = OperatorProcess(
        control_plane.admin.kubeconfig,
        tmp_path_factory.mktemp("operator"),
        env={"LLMKUBE_PROGRESS_INTERVAL_SECONDS": "1"},
    ).start()
    yield process
    process.stop()
