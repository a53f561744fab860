"""A real control plane for the session, with every CRD installed, and a namespace per test."""

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmkube.testing.binaries import third_party_crds
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.processes import wait_until

CRD_DIR = Path(__file__).parents[2] / "crds"


def _must(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stderr}"


def _all_crds_established(plane: ControlPlane) -> bool:
    listed = plane.kubectl("get", "crd", "-o", "json")
    if listed.returncode != 0:
        return False
    return all(
        any(
            condition["type"] == "Established" and condition["status"] == "True"
            for condition in (crd.get("status") or {}).get("conditions") or []
        )
        for crd in json.loads(listed.stdout)["items"]
    )


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("control-plane"))
    try:
        begun = time.monotonic()
        for crd in third_party_crds():
            # Server-side: KubeRay's CRDs exceed the client-side last-applied annotation limit.
            _must(plane.kubectl("apply", "--server-side", "-f", str(crd)), f"installing {crd.name}")
        _must(plane.kubectl("apply", "-f", str(CRD_DIR)), "installing llmkube CRDs")
        # `kubectl wait` errors out on a CRD that has no status yet, so poll instead.
        wait_until(lambda: _all_crds_established(plane), timeout=60, what="CRDs Established")
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
    _must(control_plane.kubectl("create", "namespace", name), "creating the test namespace")
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")
