"""The project's own server binaries: built and cached by hack/ scripts, never downloaded."""

import subprocess
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class MissingBinaryError(RuntimeError):
    """A binary the tests need is not installed; the message says which command installs it."""


def _run_script(script: str) -> dict[str, Path]:
    path = REPO_ROOT / "hack" / script
    if not path.exists():
        raise MissingBinaryError(f"{path} not found: the test harnesses run from a source checkout")
    result = subprocess.run(
        ["bash", str(path)], capture_output=True, text=True, check=False, timeout=3600
    )
    if result.returncode != 0:
        raise MissingBinaryError(
            f"hack/{script} failed (exit {result.returncode}); run it by hand to see why:\n"
            + result.stderr[-4000:]
        )
    pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return {name: Path(directory) for name, directory in pairs}


@cache
def server_binaries() -> dict[str, Path]:
    """kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, minio, helm,
    KubeRay's ray-operator, kwok and the folder of kwok's stages (built on first use)."""
    dirs = _run_script("build-binaries.sh")
    return {
        "kube-apiserver": dirs["kubernetes"] / "kube-apiserver",
        "kube-controller-manager": dirs["kubernetes"] / "kube-controller-manager",
        "kube-scheduler": dirs["kubernetes"] / "kube-scheduler",
        "kubectl": dirs["kubernetes"] / "kubectl",
        "ray-operator": dirs["kuberay"] / "ray-operator",
        "kwok": dirs["kwok"] / "kwok",
        "kwok-stages": dirs["kwok"] / "stages",
        "etcd": dirs["etcd"] / "etcd",
        "minio": dirs["minio"] / "minio",
        "helm": dirs["helm"] / "helm",
    }


@cache
def third_party_crds() -> list[Path]:
    """The real KubeRay and prometheus-operator CRD files (fetched on first use)."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "fetch-crds.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise MissingBinaryError(f"hack/fetch-crds.sh failed:\n{result.stderr[-4000:]}")
    return sorted(Path(result.stdout.strip()).glob("*.yaml"))
