"""Killing the operator at random points never duplicates children or loses a status, with
KubeRay's real controller and the real scheduler running beside it (llmkube.testing.fleet)."""

import json
import random
import time
from pathlib import Path

from llmkube.operator.kube import RAYJOBS, KubeApi
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.manifests import training_job_manifest
from llmkube.testing.operator import OperatorProcess
from tests.cluster.conftest import RBAC_DENIAL
from tests.cluster.helpers import eventually, listed

JOBS = 20
RESTARTS = 10


def apply_jobs(cp: ControlPlane, namespace: str, names: list[str]) -> None:
    # On the fleet's CPU pool: every job's cluster fits at once.
    manifests = [training_job_manifest(name, resources={"gpusPerWorker": 0}) for name in names]
    text = "\n---\n".join(json.dumps(manifest) for manifest in manifests)
    result = cp.kubectl("apply", "-n", namespace, "-f", "-", input=text)
    assert result.returncode == 0, result.stderr


def test_kill_and_restart_ten_times_during_twenty_reconciles(
    control_plane: ControlPlane, fleet_namespace: str, chart_identity: Path, tmp_path: Path
) -> None:
    namespace = fleet_namespace
    names = [f"job-{i:02d}" for i in range(JOBS)]
    operator = OperatorProcess(chart_identity, tmp_path, env={"LLMKUBE_NAMESPACES": namespace})
    api = KubeApi.from_environment(kubeconfig=str(control_plane.admin.kubeconfig))
    rng = random.Random(20261128)
    remaining_at_kill = []
    try:
        # The whole backlog arrives while the operator is down. Each instance is killed as soon
        # as it is seen making progress, or at a random moment once everything exists: the first
        # ones while creating children, the later ones while re-running reconciles on resume.
        apply_jobs(control_plane, namespace, names)
        for _ in range(RESTARTS):
            created = len(api.list(RAYJOBS, namespace))
            operator.start(wait=False)
            deadline = time.monotonic() + rng.uniform(1.0, 2.5)
            while time.monotonic() < deadline and created < JOBS:
                if len(api.list(RAYJOBS, namespace)) > created:
                    break  # progress: kill now, in the middle of the burst of reconciles
            operator.kill()
            remaining_at_kill.append(JOBS - len(api.list(RAYJOBS, namespace)))
        operator.start()
        assert operator.starts == RESTARTS + 1
        print("jobs without a RayJob at each kill:", remaining_at_kill)
        # Kills must have interrupted the creation of children, or this test proves little.
        assert any(0 < left < JOBS for left in remaining_at_kill), remaining_at_kill

        def all_created() -> None:
            rayjobs = sorted(
                item["metadata"]["name"] for item in listed(control_plane, "rayjob", namespace)
            )
            assert rayjobs == names  # exactly one RayJob per job, none extra
            configmaps = {
                item["metadata"]["name"] for item in listed(control_plane, "cm", namespace)
            }
            assert {f"{name}-run" for name in names} <= configmaps
            assert len(configmaps) == JOBS + 1  # plus kube-root-ca.crt

        eventually(all_created, timeout=60)

        # KubeRay makes each RayJob's cluster, the scheduler places its pods, KubeRay submits
        # the job and calls it Running: every job follows, none lost to a kill.
        def all_running() -> None:
            jobs = listed(control_plane, "ltj", namespace)
            phases = {
                job["metadata"]["name"]: (job.get("status") or {}).get("phase") for job in jobs
            }
            assert phases == dict.fromkeys(names, "Running")
            for job in jobs:
                assert job["status"]["rayJobName"] == job["metadata"]["name"]
                assert job["status"]["observedGeneration"] == 1

        eventually(all_running, timeout=120)
        assert not RBAC_DENIAL.search(operator.log()), "the chart's ClusterRole lacks a verb"
    finally:
        operator.stop()
