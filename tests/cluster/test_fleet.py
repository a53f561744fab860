"""Against KubeRay's real controller and the real kube-scheduler, on kwok's simulated GPU pools
(llmkube.testing.fleet): nothing here writes what KubeRay or the scheduler would."""

import json
from typing import Any

from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.fleet import GPU_RESOURCE, POOL_LABEL, Fleet
from llmkube.testing.manifests import deployment_manifest, training_job_manifest
from llmkube.testing.operator import OperatorProcess
from tests.cluster.helpers import (
    apply,
    condition,
    cpu_job,
    events_for,
    eventually,
    exists,
    get,
    listed,
    patch,
    rayjob_status,
    status_of,
    wait_phase,
    wait_rayjob,
)

A100 = "NVIDIA-A100-SXM4-80GB"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def gpu_job(name: str, accelerator: str, **resources: object) -> dict[str, Any]:
    """A training job whose workers ask for the pool of `accelerator`, tolerating its taint."""
    pool = {"accelerator": accelerator, "tolerations": [GPU_TOLERATION]}
    return training_job_manifest(name, resources={**resources, "nodePool": pool})


def pods_of(cp: ControlPlane, namespace: str, cluster: str) -> list[dict[str, Any]]:
    return [
        pod
        for pod in listed(cp, "pods", namespace)
        if pod["metadata"].get("labels", {}).get("ray.io/cluster") == cluster
    ]


def node_pool(cp: ControlPlane, node: str) -> str:
    found = cp.kubectl("get", "node", node, "-o", "json")
    assert found.returncode == 0, found.stderr
    pool: str = json.loads(found.stdout)["metadata"]["labels"][POOL_LABEL]
    return pool


def test_a_training_job_lands_on_the_gpu_pool_it_asks_for(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    job = gpu_job(
        "on-a100", A100, workers=3, gpusPerWorker=4, cpusPerWorker=8, memoryPerWorker="32Gi"
    )
    apply(control_plane, namespace, job)

    def cluster_name() -> str:
        rayjob = get(control_plane, "rayjob", "on-a100", namespace)
        name: str | None = (rayjob.get("status") or {}).get("rayClusterName")
        assert name, rayjob.get("status")
        return name

    cluster = eventually(cluster_name, timeout=60)

    def placed() -> list[dict[str, Any]]:
        pods = pods_of(control_plane, namespace, cluster)
        assert len(pods) == 4, [p["metadata"]["name"] for p in pods]  # the head and 3 workers
        assert all(p["status"].get("phase") == "Running" for p in pods), [
            (p["metadata"]["name"], p["status"].get("phase")) for p in pods
        ]
        return pods

    pods = eventually(placed, timeout=90)
    workers = [p for p in pods if p["metadata"]["labels"].get("ray.io/node-type") == "worker"]
    head = next(p for p in pods if p["metadata"]["labels"].get("ray.io/node-type") == "head")
    assert len(workers) == 3
    for worker in workers:
        (container,) = [c for c in worker["spec"]["containers"] if c["name"] == "ray-worker"]
        requests = container["resources"]["requests"]
        assert (requests[GPU_RESOURCE], requests["cpu"], requests["memory"]) == ("4", "8", "32Gi")
        assert container["resources"]["limits"][GPU_RESOURCE] == "4"
        assert worker["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == A100
        assert GPU_TOLERATION in worker["spec"]["tolerations"]
        assert node_pool(control_plane, worker["spec"]["nodeName"]) == "a100"
    # 8 GPUs per A100 node: three workers of 4 need both nodes, two on one of them.
    assert len({w["spec"]["nodeName"] for w in workers}) == 2
    # The head asks for no GPU and tolerates no taint: it lands on the CPU pool.
    assert node_pool(control_plane, head["spec"]["nodeName"]) == "cpu"
    assert head["status"]["podIP"]


def test_a_job_its_pool_cannot_hold_says_what_it_waits_for(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    too_big = gpu_job("too-big", A100, workers=1, gpusPerWorker=16)  # A100 nodes have 8 each
    no_pool = gpu_job("no-pool", "NVIDIA-H100-80GB-HBM3", gpusPerWorker=1)
    apply(control_plane, namespace, too_big, no_pool)

    def waiting(name: str, *parts: str) -> None:
        status = get(control_plane, "ltj", name, namespace).get("status") or {}
        assert status.get("phase") == "Pending", status
        message = status.get("waitingFor") or ""
        for part in parts:
            assert part in message, message
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["reason"], ready["message"]) == ("Unschedulable", message)

    eventually(
        lambda: waiting(
            "too-big",
            "1 of 2 Ray pods cannot be scheduled",
            "16 x nvidia.com/gpu",
            "Insufficient nvidia.com/gpu",
            "add nodes to the pool",
        ),
        timeout=60,
    )
    eventually(
        lambda: waiting(
            "no-pool",
            "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
            "no node carries those labels",
        ),
        timeout=60,
    )
    # The printer column shows it too.
    table = control_plane.kubectl("get", "ltj", "too-big", "-n", namespace)
    assert "16 x nvidia.com/gpu" in table.stdout, table.stdout

    # A deployment whose replicas want more than an L4 node has says so the same way.
    pool = {"accelerator": "NVIDIA-L4", "tolerations": [GPU_TOLERATION]}
    chat = deployment_manifest("big-chat", resources={"gpusPerReplica": 2, "nodePool": pool})
    apply(control_plane, namespace, chat)

    def deployment_waits() -> None:
        status = get(control_plane, "llmd", "big-chat", namespace).get("status") or {}
        assert status.get("phase") == "Deploying", status
        message = status.get("waitingFor") or ""
        assert "2 of 3 Ray pods cannot be scheduled" in message, message
        assert "2 x nvidia.com/gpu" in message, message
        ready = condition(status, "Ready")
        assert (ready["reason"], ready["message"]) == ("Unschedulable", message)

    eventually(deployment_waits, timeout=60)


def test_deleting_a_job_takes_its_rayjob_raycluster_and_pods_with_it(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    apply(control_plane, namespace, gpu_job("short-lived", "NVIDIA-L4", gpusPerWorker=1))

    def submitted() -> None:
        clusters = listed(control_plane, "rayclusters", namespace)
        assert len(clusters) == 1
        ray_pods = pods_of(control_plane, namespace, clusters[0]["metadata"]["name"])
        assert len(ray_pods) == 2, [p["metadata"]["name"] for p in ray_pods]
        assert all(p["status"].get("phase") == "Running" for p in ray_pods)
        # Its cluster ready, KubeRay started the `ray job submit` Job from our template.
        assert listed(control_plane, "jobs", namespace)

    eventually(submitted, timeout=90)
    deleted = control_plane.kubectl("delete", "ltj", "short-lived", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr

    def gone() -> None:
        # kube-controller-manager's garbage collector follows the ownerReferences the operator
        # and KubeRay set; kwok lets the pods' deletion complete as a kubelet would.
        for kind in ("rayjobs", "rayclusters", "jobs", "pods"):
            assert listed(control_plane, kind, namespace) == [], kind

    eventually(gone, timeout=90)


def test_a_job_succeeds_when_its_ray_job_does(
    control_plane: ControlPlane, fleet: Fleet, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    apply(control_plane, namespace, cpu_job("happy"))
    # KubeRay, its cluster scheduled and Ready, submits the job and calls it Running.
    wait_rayjob(control_plane, namespace, "happy", "Running")
    status = wait_phase(control_plane, "ltj", "happy", namespace, "Running", timeout=60)
    assert status["startTime"]
    columns = control_plane.kubectl("get", "ltj", "happy", "-n", namespace).stdout.splitlines()
    assert columns[1].split()[:2] == ["happy", "Running"]

    fleet.end_ray_job(namespace, "happy", "SUCCEEDED")
    # KubeRay sees the job end and its submitter exit, and completes the RayJob.
    status = wait_phase(control_plane, "ltj", "happy", namespace, "Succeeded", timeout=90)
    assert status["model"] == {"uri": "s3://models/happy/model"}
    assert rayjob_status(control_plane, namespace, "happy")["jobDeploymentStatus"] == "Complete"
    complete = condition(status, "Complete")
    assert (complete["status"], complete["observedGeneration"]) == ("True", 1)
    assert status["completionTime"]
    reasons = {event["reason"] for event in events_for(control_plane, namespace, "happy")}
    assert {"Initializing", "Running", "Succeeded"} <= reasons, reasons


def test_a_failing_job_is_retried_by_kuberay_then_fails(
    control_plane: ControlPlane, fleet: Fleet, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    apply(control_plane, namespace, cpu_job("flaky", backoffLimit=1))
    wait_rayjob(control_plane, namespace, "flaky", "Running")
    first_cluster = rayjob_status(control_plane, namespace, "flaky")["rayClusterName"]
    fleet.end_ray_job(namespace, "flaky", "FAILED", "worker exited with code 1")

    # KubeRay retries on a fresh cluster; the job says so and stays Running.
    def retried() -> None:
        status = status_of(control_plane, "ltj", "flaky", namespace)
        assert status.get("retries") == 1, status
        rayjob = rayjob_status(control_plane, namespace, "flaky")
        assert rayjob.get("jobDeploymentStatus") == "Running", rayjob
        assert rayjob.get("rayClusterName") not in (None, first_cluster), rayjob

    eventually(retried, timeout=120)
    wait_rayjob(control_plane, namespace, "flaky", "Running")
    assert status_of(control_plane, "ltj", "flaky", namespace)["phase"] == "Running"

    fleet.end_ray_job(namespace, "flaky", "FAILED", "worker exited with code 1")
    status = wait_phase(control_plane, "ltj", "flaky", namespace, "Failed", timeout=90)
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AppFailed")
    assert "worker exited with code 1" in ready["message"]
    assert status["retries"] == 2
    events = events_for(control_plane, namespace, "flaky")
    assert any(e["type"] == "Warning" and e["reason"] == "AppFailed" for e in events)


def serving_pods(cp: ControlPlane, namespace: str, service: str) -> set[str]:
    """The pods a Service sends traffic to, as the endpoints controller lists them."""
    found = cp.kubectl("get", "endpoints", service, "-n", namespace, "-o", "json")
    if found.returncode != 0:
        return set()
    return {
        address["targetRef"]["name"]
        for subset in json.loads(found.stdout).get("subsets") or []
        for address in subset.get("addresses") or []
    }


def rayservice_clusters(cp: ControlPlane, namespace: str, name: str) -> tuple[str, str]:
    """(active, pending) RayCluster names, as KubeRay reports them."""
    status = get(cp, "rayservice", name, namespace).get("status") or {}
    active = (status.get("activeServiceStatus") or {}).get("rayClusterName") or ""
    pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName") or ""
    return active, pending


def test_a_deployment_serves_from_kuberays_cluster_and_rolls_over_to_a_new_model(
    control_plane: ControlPlane, fleet: Fleet, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    apply(
        control_plane,
        namespace,
        cpu_job("shakespeare"),
        deployment_manifest(
            "chat",
            model={"trainingJobRef": {"name": "shakespeare"}},
            resources={"gpusPerReplica": 0},
        ),
    )
    status = wait_phase(control_plane, "llmd", "chat", namespace, "WaitingForModel")
    waiting = condition(status, "ModelAvailable")["message"]
    assert "waiting for LLMTrainingJob shakespeare to succeed" in waiting
    wait_rayjob(control_plane, namespace, "shakespeare", "Running")
    assert not exists(control_plane, "rayservice", "chat", namespace)
    fleet.end_ray_job(namespace, "shakespeare", "SUCCEEDED")
    wait_phase(control_plane, "ltj", "shakespeare", namespace, "Succeeded", timeout=90)
    rayservice = eventually(lambda: get(control_plane, "rayservice", "chat", namespace))
    served = json.loads(rayservice["spec"]["serveConfigV2"])["applications"][0]["args"]["config"]
    assert served["modelUri"] == "s3://models/shakespeare/model"

    # The model published, the operator makes the RayService; KubeRay makes its first cluster,
    # the scheduler places its pods and KubeRay deploys the Serve config to its head.
    def deployed_to() -> str:
        active, pending = rayservice_clusters(control_plane, namespace, "chat")
        assert (bool(active), bool(pending)) == (False, True), (active, pending)
        assert fleet.dashboard.serve_config(namespace, pending), "no Serve config PUT yet"
        return pending

    first = eventually(deployed_to, timeout=90)
    status = status_of(control_plane, "llmd", "chat", namespace)
    assert status["phase"] == "Deploying"
    # Pods of a cluster whose Serve app is not up get no traffic.
    assert serving_pods(control_plane, namespace, "chat") == set()

    fleet.serve_healthy(namespace, first)
    status = wait_phase(control_plane, "llmd", "chat", namespace, "Ready", timeout=90)
    first_pods = workers_of(control_plane, namespace, first)
    assert len(first_pods) == 2  # one worker per replica; the head serves nothing
    # KubeRay counts the Serve Service's endpoints: one per worker whose proxy is up.
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    first_version = status["liveModelVersion"]
    assert first_version == status["model"]["version"]
    eventually(lambda: _serves_from(control_plane, namespace, first_pods))

    # A new model: KubeRay builds a second cluster beside the first.
    patch(
        control_plane,
        "llmd",
        "chat",
        namespace,
        {"spec": {"model": {"uri": "s3://models/v2/model", "trainingJobRef": None}}},
    )

    def second_deploying() -> str:
        active, pending = rayservice_clusters(control_plane, namespace, "chat")
        assert (active, bool(pending)) == (first, True), (active, pending)
        assert fleet.dashboard.serve_config(namespace, pending), "no Serve config PUT yet"
        assert len(pods_of(control_plane, namespace, pending)) == 3
        return pending

    second = eventually(second_deploying, timeout=90)
    status = status_of(control_plane, "llmd", "chat", namespace)
    assert condition(status, "UpgradeInProgress")["status"] == "True"
    assert status["phase"] == "Ready"  # the first cluster serves on
    assert status["liveModelVersion"] == first_version != status["model"]["version"]
    # Until the new cluster's Serve app is healthy, every request still reaches the old one:
    # through KubeRay's Serve Service and through the deployment's own.
    assert serving_pods(control_plane, namespace, "chat") == first_pods
    assert serving_pods(control_plane, namespace, "chat-serve-svc") == first_pods

    fleet.serve_healthy(namespace, second)
    second_pods = workers_of(control_plane, namespace, second)

    def switched() -> None:
        current = status_of(control_plane, "llmd", "chat", namespace)
        assert current["liveModelVersion"] == current["model"]["version"] != first_version
        assert condition(current, "UpgradeInProgress")["status"] == "False"
        assert current["phase"] == "Ready"

    eventually(switched, timeout=90)
    eventually(lambda: _serves_from(control_plane, namespace, second_pods))

    # Deleting the deployment takes the RayService, both clusters and their pods with it.
    deleted = control_plane.kubectl("delete", "llmd", "chat", "-n", namespace)
    assert deleted.returncode == 0, deleted.stderr

    def gone() -> None:
        for kind in ("rayservices", "rayclusters", "services"):
            names = [item["metadata"]["name"] for item in listed(control_plane, kind, namespace)]
            assert not [name for name in names if name.startswith("chat")], (kind, names)
        assert not [
            p for p in listed(control_plane, "pods", namespace) if "chat" in p["metadata"]["name"]
        ]

    eventually(gone, timeout=90)


def workers_of(cp: ControlPlane, namespace: str, cluster: str) -> set[str]:
    return {
        pod["metadata"]["name"]
        for pod in pods_of(cp, namespace, cluster)
        if pod["metadata"]["labels"].get("ray.io/node-type") == "worker"
    }


def _serves_from(cp: ControlPlane, namespace: str, pods: set[str]) -> None:
    assert serving_pods(cp, namespace, "chat") == pods
    assert serving_pods(cp, namespace, "chat-serve-svc") == pods


def set_rayjob_suspend(cp: ControlPlane, namespace: str, name: str, suspend: bool) -> None:
    # Kueue's part, played by the test: Kueue itself is not built here (see docs/operator.md).
    # Admitting a queued job unsuspends its RayJob; preempting an admitted one suspends it.
    patch(cp, "rayjob", name, namespace, {"spec": {"suspend": suspend}})


def test_a_queued_job_waits_for_kueue_and_the_operator_leaves_suspend_to_it(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    scheduling = {"queueName": "team-a", "priorityClassName": "batch"}
    apply(control_plane, namespace, cpu_job("queued", scheduling=scheduling))

    # Created suspended and labelled for Kueue; KubeRay starts no cluster for it.
    status = wait_phase(control_plane, "ltj", "queued", namespace, "Queued", timeout=60)
    assert condition(status, "Ready")["reason"] == "Queued"
    assert "waiting in LocalQueue team-a for Kueue to admit it" in status["message"]
    rayjob = get(control_plane, "rayjob", "queued", namespace)
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert rayjob["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "batch"
    assert rayjob["spec"]["suspend"] is True
    assert rayjob_status(control_plane, namespace, "queued")["jobDeploymentStatus"] == "Suspended"
    assert listed(control_plane, "rayclusters", namespace) == []

    set_rayjob_suspend(control_plane, namespace, "queued", False)  # admitted
    wait_rayjob(control_plane, namespace, "queued", "Running")
    wait_phase(control_plane, "ltj", "queued", namespace, "Running", timeout=60)

    set_rayjob_suspend(control_plane, namespace, "queued", True)  # preempted
    status = wait_phase(control_plane, "ltj", "queued", namespace, "Queued", timeout=90)
    assert condition(status, "Ready")["reason"] == "Preempted"
    # A reconcile of the job (any spec change runs one) leaves Kueue's suspension alone.
    patch(control_plane, "ltj", "queued", namespace, {"spec": {"training": {"maxSteps": 2000}}})

    def reconciled() -> None:
        job = get(control_plane, "ltj", "queued", namespace)
        assert job["status"]["observedGeneration"] == job["metadata"]["generation"]

    eventually(reconciled)
    assert get(control_plane, "rayjob", "queued", namespace)["spec"]["suspend"] is True
    assert status_of(control_plane, "ltj", "queued", namespace)["phase"] == "Queued"

    set_rayjob_suspend(control_plane, namespace, "queued", False)  # re-admitted
    wait_rayjob(control_plane, namespace, "queued", "Running")
    wait_phase(control_plane, "ltj", "queued", namespace, "Running", timeout=60)


def test_a_queued_deployment_starts_when_kueue_resumes_its_cluster(
    control_plane: ControlPlane, fleet_namespace: str, operator: OperatorProcess
) -> None:
    namespace = fleet_namespace
    chat = deployment_manifest(
        "queued-chat", resources={"gpusPerReplica": 0}, scheduling={"queueName": "serving"}
    )
    apply(control_plane, namespace, chat)
    status = wait_phase(control_plane, "llmd", "queued-chat", namespace, "Queued", timeout=60)
    assert "waiting in LocalQueue serving" in condition(status, "Ready")["message"]
    rayservice = get(control_plane, "rayservice", "queued-chat", namespace)
    assert rayservice["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "serving"
    assert rayservice["spec"]["rayClusterConfig"]["suspend"] is True

    # Kueue's part, played by the test (Kueue is not built here): admission resumes the
    # cluster. KubeRay then starts its pods; the operator keeps Kueue's value on reconcile.
    resumed = {"spec": {"rayClusterConfig": {"suspend": False}}}
    patch(control_plane, "rayservice", "queued-chat", namespace, resumed)

    def deploying() -> None:
        active, pending = rayservice_clusters(control_plane, namespace, "queued-chat")
        cluster = pending or active
        assert cluster, (active, pending)
        assert len(pods_of(control_plane, namespace, cluster)) == 3
        assert status_of(control_plane, "llmd", "queued-chat", namespace)["phase"] == "Deploying"

    eventually(deploying, timeout=90)
    patch(control_plane, "llmd", "queued-chat", namespace, {"spec": {"replicas": 1}})
    eventually(lambda: _observed(control_plane, namespace, "queued-chat"), timeout=30)
    rayservice = get(control_plane, "rayservice", "queued-chat", namespace)
    assert not rayservice["spec"]["rayClusterConfig"].get("suspend")  # false, or left out


def _observed(cp: ControlPlane, namespace: str, name: str) -> None:
    body = get(cp, "llmd", name, namespace)
    assert (body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"]
