"""A simulated fleet beside a test control plane: the real kube-scheduler and KubeRay's real
controller, and kwok running nodes that run nothing (kwok marks each pod the scheduler places
on them Ready, with an IP, and lets a Job's pods succeed).

Three pools, labelled and tainted like a cloud's GPU node pools:

| pool | nodes | each node |
|---|---|---|
| cpu | 2 | 16 CPUs, 64 GiB |
| a100 | 2 | 96 CPUs, 1000 GiB, 8 x NVIDIA-A100-SXM4-80GB (tainted nvidia.com/gpu) |
| l4 | 2 | 16 CPUs, 64 GiB, 1 x NVIDIA-L4 (tainted nvidia.com/gpu) |

    with Fleet.start(control_plane, workdir) as fleet:
        ...  # RayJobs become RayClusters, pods land on nodes
"""

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmkube.testing.binaries import server_binaries
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.processes import ServerProcess, StoppedOnExit, free_port, wait_until

POOL_LABEL = "cloud.google.com/gke-nodepool"
"""The node-pool label the fleet's nodes carry (GKE's name; any label works the same)."""
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


@dataclass(frozen=True)
class Pool:
    name: str
    nodes: int
    cpus: int
    memory: str
    gpus: int = 0
    gpu_product: str | None = None


FLEET = (
    Pool("cpu", 2, 16, "64Gi"),
    Pool("a100", 2, 96, "1000Gi", 8, "NVIDIA-A100-SXM4-80GB"),
    Pool("l4", 2, 16, "64Gi", 1, "NVIDIA-L4"),
)


def node_manifest(pool: Pool, index: int) -> dict[str, Any]:
    """A Node of `pool` as its cloud would register it (kwok fills in the rest of its status)."""
    name = f"{pool.name}-{index}"
    labels = {"kubernetes.io/hostname": name, "type": "kwok", POOL_LABEL: pool.name}
    capacity = {"cpu": str(pool.cpus), "memory": pool.memory, "pods": "110"}
    taints = []
    if pool.gpus:
        assert pool.gpu_product is not None
        labels[GPU_PRODUCT_LABEL] = pool.gpu_product
        capacity[GPU_RESOURCE] = str(pool.gpus)
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def fleet_nodes(pools: tuple[Pool, ...] = FLEET) -> list[dict[str, Any]]:
    return [node_manifest(pool, index) for pool in pools for index in range(pool.nodes)]


@dataclass
class Fleet(StoppedOnExit):
    plane: ControlPlane
    processes: list[ServerProcess]

    @classmethod
    def start(
        cls,
        plane: ControlPlane,
        workdir: Path,
        *,
        namespaces: list[str],
        pools: tuple[Pool, ...] = FLEET,
        timeout: float = 90.0,
    ) -> "Fleet":
        """KubeRay acts only in `namespaces`: elsewhere, tests may still play its part."""
        binaries = server_binaries()
        workdir.mkdir(parents=True, exist_ok=True)
        stages = workdir / "kwok-stages.yaml"
        stages.write_text(
            "\n---\n".join(
                path.read_text() for path in sorted(binaries["kwok-stages"].glob("*.yaml"))
            )
        )
        kubeconfig = str(plane.admin.kubeconfig)
        scheduler_port, ray_metrics, ray_health, kwok_port = (free_port() for _ in range(4))
        fleet = cls(plane, [])
        try:
            fleet.processes.append(
                ServerProcess(
                    "kube-scheduler",
                    [
                        str(binaries["kube-scheduler"]),
                        f"--kubeconfig={kubeconfig}",
                        f"--authentication-kubeconfig={kubeconfig}",
                        f"--authorization-kubeconfig={kubeconfig}",
                        "--leader-elect=false",
                        "--bind-address=127.0.0.1",
                        f"--secure-port={scheduler_port}",
                        f"--cert-dir={workdir / 'scheduler'}",
                    ],
                    workdir,
                )
            )
            fleet.processes.append(
                ServerProcess(
                    "kwok",
                    [
                        str(binaries["kwok"]),
                        f"--kubeconfig={kubeconfig}",
                        f"--config={stages}",
                        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                        f"--server-address=127.0.0.1:{kwok_port}",
                        "--cidr=10.244.0.0/16",
                    ],
                    workdir,
                )
            )
            fleet.processes.append(
                ServerProcess(
                    "ray-operator",
                    [
                        str(binaries["ray-operator"]),
                        f"--kubeconfig={kubeconfig}",
                        f"--metrics-addr=127.0.0.1:{ray_metrics}",
                        f"--health-probe-bind-address=127.0.0.1:{ray_health}",
                        "--enable-leader-election=false",
                        f"--watch-namespace={','.join(namespaces)}",
                        "--log-stdout-encoder=console",
                    ],
                    workdir,
                )
            )
            for node in fleet_nodes(pools):
                created = plane.kubectl("apply", "-f", "-", input=json.dumps(node))
                if created.returncode != 0:
                    raise RuntimeError(f"node {node['metadata']['name']}: {created.stderr}")
            expected = sum(pool.nodes for pool in pools)
            wait_until(
                lambda: fleet._ready_nodes() == expected,
                timeout=timeout,
                what=f"kwok to make {expected} nodes Ready",
                watch=fleet.processes,
            )
            wait_until(
                lambda: _healthz(f"https://127.0.0.1:{scheduler_port}"),
                timeout=timeout,
                what="kube-scheduler",
                watch=fleet.processes,
            )
            wait_until(
                lambda: _healthz(f"http://127.0.0.1:{ray_health}"),
                timeout=timeout,
                what="KubeRay's ray-operator",
                watch=fleet.processes,
            )
        except BaseException:
            fleet.stop()
            raise
        return fleet

    def _ready_nodes(self) -> int:
        listed = self.plane.kubectl("get", "nodes", "-o", "json")
        if listed.returncode != 0:
            return 0
        return sum(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in node["status"].get("conditions", [])
            )
            for node in json.loads(listed.stdout)["items"]
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def _healthz(server: str) -> bool:
    # kube-scheduler serves a certificate it signed itself: nothing to verify it against.
    context = ssl._create_unverified_context() if server.startswith("https") else None
    try:
        with urllib.request.urlopen(f"{server}/healthz", timeout=2, context=context) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False
