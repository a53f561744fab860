"""The control-plane harness itself: versions, identities, and no process outliving its owner."""

import os
import shutil
import signal
import subprocess
import sys

from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.processes import wait_until


def test_versions_are_known(control_plane: ControlPlane) -> None:
    assert control_plane.versions["kube-apiserver"] == "Kubernetes v1.34.4"
    assert control_plane.versions["etcd"].endswith("3.6.4")
    server = control_plane.kubectl("version", "-o", "json")
    assert '"gitVersion": "v1.34.4"' in server.stdout


def test_servers_die_when_their_owner_is_killed() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-m", "llmkube.testing.controlplane"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    workdir = ""
    try:
        assert owner.stdout is not None
        ready = owner.stdout.readline()
        assert "control plane ready" in ready, ready
        workdir = owner.stdout.readline().split()[-1].rsplit("/", 1)[0]
        children = subprocess.run(
            ["pgrep", "-f", "--", workdir],  # every server's flags name its work dir
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert len(children) >= 2, "etcd and kube-apiserver should be running"

        os.kill(owner.pid, signal.SIGKILL)  # no cleanup code runs: only the kernel can help
        owner.wait()

        def all_gone() -> bool:
            return not any(os.path.exists(f"/proc/{pid}") for pid in children)

        wait_until(all_gone, timeout=10, what="servers exiting after their owner was killed")
    finally:
        if owner.poll() is None:
            owner.terminate()  # a failed assertion above must not leave a control plane running
            owner.wait(30)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
