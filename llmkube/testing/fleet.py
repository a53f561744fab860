"""A simulated fleet beside a test control plane: the real kube-scheduler and KubeRay's real
controller, and kwok running nodes that run nothing (kwok marks each pod the scheduler places
on them Ready, with an IP). No Ray runs in those pods: what KubeRay would ask a Ray head, a
stand-in answers (llmkube.testing.ray_dashboard), and the test says when a Ray job ends or Ray
Serve is healthy (`Fleet.end_ray_job`, `Fleet.serve_healthy`).

Three pools, labelled and tainted like a cloud's GPU node pools:

| pool | nodes | each node |
|---|---|---|
| cpu | 8 | 64 CPUs, 256 GiB |
| a100 | 2 | 96 CPUs, 1000 GiB, 8 x NVIDIA-A100-SXM4-80GB (tainted nvidia.com/gpu) |
| l4 | 2 | 16 CPUs, 64 GiB, 1 x NVIDIA-L4 (tainted nvidia.com/gpu) |

    with Fleet.start(control_plane, workdir, namespaces=[...]) as fleet:
        ...  # RayJobs become RayClusters, pods land on nodes
        fleet.end_ray_job(namespace, "my-job", "SUCCEEDED")  # KubeRay completes the RayJob
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
from llmkube.testing.ray_dashboard import RayDashboardStandIn

POOL_LABEL = "cloud.google.com/gke-nodepool"
"""The node-pool label the fleet's nodes carry (GKE's name; any label works the same)."""
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_RESOURCE = "nvidia.com/gpu"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
SUBMITTER_EXIT_ANNOTATION = "fleet.llmkube.io/exit-code"
"""Set on a `ray job submit` pod when its Ray job ends: kwok then ends the pod with that code."""
KUBERAY_STAGES = ("node-heartbeat-with-lease", "node-initialize", "pod-delete", "pod-ready")
"""kwok's own stages the fleet uses; its pod-complete stage would end a `ray job submit` pod at
once, where the real one follows the Ray job to its end (`SUBMITTER_EXITS` instead)."""

SUBMITTER_EXITS: dict[str, Any] = {
    "apiVersion": "kwok.x-k8s.io/v1alpha1",
    "kind": "Stage",
    "metadata": {"name": "ray-job-submitter-exits"},
    "spec": {
        "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
        "selector": {
            "matchExpressions": [
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {
                    "key": f'.metadata.annotations["{SUBMITTER_EXIT_ANNOTATION}"]',
                    "operator": "Exists",
                },
            ]
        },
        "next": {
            "statusTemplate": (
                "{{ $now := Now }}\n"
                f'{{{{ $code := index .metadata.annotations "{SUBMITTER_EXIT_ANNOTATION}" }}}}\n'
                "containerStatuses:\n"
                "{{ range $index, $item := .spec.containers }}\n"
                "- image: {{ $item.image | Quote }}\n"
                "  name: {{ $item.name | Quote }}\n"
                "  ready: false\n"
                "  restartCount: 0\n"
                "  started: false\n"
                "  state:\n"
                "    terminated:\n"
                "      exitCode: {{ $code }}\n"
                "      finishedAt: {{ $now | Quote }}\n"
                '      reason: {{ if eq $code "0" }}Completed{{ else }}Error{{ end }}\n'
                "      startedAt: {{ $now | Quote }}\n"
                "{{ end }}\n"
                'phase: {{ if eq $code "0" }}Succeeded{{ else }}Failed{{ end }}\n'
            )
        },
    },
}


@dataclass(frozen=True)
class Pool:
    name: str
    nodes: int
    cpus: int
    memory: str
    gpus: int = 0
    gpu_product: str | None = None


FLEET = (
    Pool("cpu", 8, 64, "256Gi"),
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
    dashboard: RayDashboardStandIn
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
                [(binaries["kwok-stages"] / f"{name}.yaml").read_text() for name in KUBERAY_STAGES]
                + [json.dumps(SUBMITTER_EXITS)]
            )
        )
        kubeconfig = str(plane.admin.kubeconfig)
        scheduler_port, ray_metrics, ray_health, kwok_port = (free_port() for _ in range(4))
        fleet = cls(plane, RayDashboardStandIn(), [])
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
                        # Renew each node's Lease as a kubelet does (kwok's heartbeat stage
                        # assumes it): without, the node controller calls the nodes NotReady
                        # after 40 s and every pod on them unready.
                        "--node-lease-duration-seconds=40",
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
                    # KubeRay calls each head's dashboard by its Service's DNS name over plain
                    # HTTP; as its proxy, the stand-in takes those calls whole. The apiserver
                    # (HTTPS on loopback) is never proxied.
                    env={
                        "HTTP_PROXY": fleet.dashboard.proxy_url,
                        "http_proxy": fleet.dashboard.proxy_url,
                        "NO_PROXY": "127.0.0.1,localhost",
                        "no_proxy": "127.0.0.1,localhost",
                    },
                )
            )
            nodes = {"apiVersion": "v1", "kind": "List", "items": fleet_nodes(pools)}
            created = plane.kubectl("apply", "-f", "-", input=json.dumps(nodes))
            if created.returncode != 0:
                raise RuntimeError(f"the fleet's nodes: {created.stderr}")
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

    def end_ray_job(self, namespace: str, rayjob: str, status: str, message: str = "") -> None:
        """The Ray job of RayJob `rayjob` ends with `status` (SUCCEEDED, FAILED or STOPPED), as
        only a live Ray could say: its head's dashboard reports it, and its `ray job submit` pod,
        which follows the job's log, exits 0 as the real one does whatever the job's end."""
        found = self.plane.kubectl("get", "rayjob", rayjob, "-n", namespace, "-o", "json")
        if found.returncode != 0:
            raise RuntimeError(found.stderr)
        job_id = (json.loads(found.stdout).get("status") or {}).get("jobId")
        if not job_id:
            raise RuntimeError(
                f"RayJob {namespace}/{rayjob} has no jobId yet: KubeRay has not submitted it"
            )
        self.dashboard.end_job(namespace, job_id, status, message)
        wait_until(
            lambda: self._submitter_exits(namespace, rayjob),
            timeout=60,
            what=f"the submitter pod of RayJob {namespace}/{rayjob}",
            watch=self.processes,
        )

    def _submitter_exits(self, namespace: str, rayjob: str) -> bool:
        # KubeRay names the submitter Job after the RayJob; the Job controller labels its pods.
        annotated = self.plane.kubectl(
            "annotate",
            "pods",
            "-n",
            namespace,
            "--overwrite",
            "-l",
            f"batch.kubernetes.io/job-name={rayjob}",
            "--field-selector=status.phase=Running",
            f"{SUBMITTER_EXIT_ANNOTATION}=0",
        )
        return annotated.returncode == 0 and "annotated" in annotated.stdout

    def serve_healthy(self, namespace: str, cluster: str) -> None:
        """Ray Serve in RayCluster `cluster` reports its applications healthy."""
        self.dashboard.serve_healthy(namespace, cluster)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.dashboard.stop()


def _healthz(server: str) -> bool:
    # kube-scheduler serves a certificate it signed itself: nothing to verify it against.
    context = ssl._create_unverified_context() if server.startswith("https") else None
    try:
        with urllib.request.urlopen(f"{server}/healthz", timeout=2, context=context) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False
