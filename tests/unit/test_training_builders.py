"""Table tests of the pure builders: LLMTrainingJob -> ConfigMap and RayJob."""

import json
from typing import Any

import pytest

from llmkube.api import LLMTrainingJob
from llmkube.api.runconfig import TrainingRunConfig, training_run_config
from llmkube.operator.naming import MAX_RAYJOB_NAME, rayjob_name, run_configmap_name
from llmkube.operator.training.builders import (
    ENTRYPOINT,
    applied_spec,
    build_rayjob,
    build_run_configmap,
)

IMAGE = "llmkube/runtime:test"


def job(**spec: Any) -> LLMTrainingJob:
    return LLMTrainingJob.model_validate(
        {
            "apiVersion": "llmkube.io/v1alpha1",
            "kind": "LLMTrainingJob",
            "metadata": {"name": "shakespeare", "namespace": "ml", "uid": "u-1", "generation": 1},
            "spec": {
                "dataset": {"source": "s3://datasets/text/"},
                "training": {"maxSteps": 1000},
                "output": "s3://models/shakespeare/",
                **spec,
            },
        }
    )


def worker(rayjob: dict[str, Any]) -> dict[str, Any]:
    group: dict[str, Any] = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    return group


def head(rayjob: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    return spec


@pytest.mark.parametrize(
    ("resources", "limits"),
    [
        ({}, {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}),
        (
            {"gpusPerWorker": 8, "cpusPerWorker": 32, "memoryPerWorker": "500Gi"},
            {"cpu": "32", "memory": "500Gi", "nvidia.com/gpu": "8"},
        ),
        ({"gpusPerWorker": 0, "cpusPerWorker": 2}, {"cpu": "2", "memory": "16Gi"}),
    ],
)
def test_worker_resources(resources: dict[str, Any], limits: dict[str, str]) -> None:
    container = worker(build_rayjob(job(resources=resources), default_image=IMAGE))["template"][
        "spec"
    ]["containers"][0]
    assert container["resources"] == {"requests": limits, "limits": limits}


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        ({}, {}),
        (
            {"accelerator": "NVIDIA-H100-80GB-HBM3"},
            {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        ),
        (
            {
                "nodeSelector": {"pool": "gpu"},
                "accelerator": "NVIDIA-A100-SXM4-40GB",
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {"x": 1}},
            },
            {
                "nodeSelector": {"pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {"x": 1}},
            },
        ),
    ],
)
def test_node_pool_placement(pool: dict[str, Any], expected: dict[str, Any]) -> None:
    pod = worker(build_rayjob(job(resources={"nodePool": pool}), default_image=IMAGE))["template"][
        "spec"
    ]
    placed = {k: pod[k] for k in ("nodeSelector", "tolerations", "affinity") if k in pod}
    assert placed == expected
    head_pod = head(build_rayjob(job(resources={"nodePool": pool}), default_image=IMAGE))
    assert "nodeSelector" not in head_pod["template"]["spec"], "the head stays on CPU nodes"


def test_credentials_come_from_the_secret_by_reference() -> None:
    spec = {"storage": {"credentialsSecret": {"name": "minio", "accessKeyIdKey": "user"}}}
    rayjob = build_rayjob(job(**spec), default_image=IMAGE)
    for pod in (head(rayjob), worker(rayjob)):
        env = {e["name"]: e for e in pod["template"]["spec"]["containers"][0]["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
            "secretKeyRef": {"name": "minio", "key": "user"}
        }
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "minio", "key": "AWS_SECRET_ACCESS_KEY"}
        }
    assert "secretKeyRef" not in json.dumps(build_rayjob(job(), default_image=IMAGE))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {"backoffLimit": 3, "suspend": False}),
        (
            {"backoffLimit": 0, "suspend": True, "activeDeadlineSeconds": 3600},
            {"backoffLimit": 0, "suspend": True, "activeDeadlineSeconds": 3600},
        ),
    ],
)
def test_job_controls_pass_through(spec: dict[str, Any], expected: dict[str, Any]) -> None:
    built = build_rayjob(job(**spec), default_image=IMAGE)["spec"]
    assert {k: built[k] for k in expected} == expected
    assert built["shutdownAfterJobFinishes"] is True  # KubeRay requires it for suspend
    assert built["entrypoint"] == ENTRYPOINT
    if "activeDeadlineSeconds" not in expected:
        assert "activeDeadlineSeconds" not in built


def test_workers_and_image() -> None:
    rayjob = build_rayjob(job(resources={"workers": 4}), default_image=IMAGE)
    group = worker(rayjob)
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (4, 4, 4)
    assert group["template"]["spec"]["containers"][0]["image"] == IMAGE
    custom = build_rayjob(job(image="registry.local/rt:2"), default_image=IMAGE)
    assert head(custom)["template"]["spec"]["containers"][0]["image"] == "registry.local/rt:2"
    assert head(rayjob)["rayStartParams"] == {"num-cpus": "0", "num-gpus": "0"}


def test_ownership_labels_and_config_mount() -> None:
    training = job()
    rayjob = build_rayjob(training, default_image=IMAGE)
    assert rayjob["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "llmkube.io/v1alpha1",
            "kind": "LLMTrainingJob",
            "name": "shakespeare",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    labels = rayjob["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "llmkube-operator"
    assert labels["app.kubernetes.io/instance"] == "shakespeare"
    assert labels["llmkube.io/training-job"] == "shakespeare"
    volume = head(rayjob)["template"]["spec"]["volumes"][0]
    assert volume == {"name": "run-config", "configMap": {"name": "shakespeare-run"}}


def test_configmap_holds_the_run_config() -> None:
    training = job()
    config = training_run_config(training)
    configmap = build_run_configmap(training, config)
    assert configmap["metadata"]["name"] == run_configmap_name("shakespeare")
    stored = TrainingRunConfig.model_validate_json(configmap["data"]["run.json"])
    assert stored == config


def test_builders_are_pure() -> None:
    training = job()
    assert build_rayjob(training, default_image=IMAGE) == build_rayjob(
        training, default_image=IMAGE
    )


@pytest.mark.parametrize("length", [1, 47, 48, 200])
def test_names_fit_kuberay_limits_and_stay_distinct(length: int) -> None:
    name = "a" * length
    assert len(rayjob_name(name)) <= MAX_RAYJOB_NAME
    assert rayjob_name(name) == rayjob_name(name)
    if length > MAX_RAYJOB_NAME:
        assert rayjob_name(name) != rayjob_name(name + "b")


def test_applied_spec_ignores_only_suspend() -> None:
    assert applied_spec(job(suspend=True)) == applied_spec(job(suspend=False))
    assert applied_spec(job(training={"maxSteps": 5})) != applied_spec(job())


def kueue_refuses(rayjob: dict[str, Any]) -> list[str]:
    """Kueue v0.17's webhook rules for a RayJob it manages (pkg/controller/jobs/rayjob and
    raycluster: ValidateCreate), which would refuse the RayJob at creation."""
    spec, cluster = rayjob["spec"], rayjob["spec"]["rayClusterSpec"]
    problems = []
    if spec.get("clusterSelector"):
        problems.append("a kueue managed job should not use an existing cluster")
    if not spec.get("shutdownAfterJobFinishes"):
        problems.append("a kueue managed job should delete the cluster after finishing")
    if cluster.get("enableInTreeAutoscaling"):
        problems.append("a kueue managed job should only use autoscaling with workload slicing")
    if len(cluster["workerGroupSpecs"]) > 7:
        problems.append("at most 7 worker groups")
    if any(group["groupName"] == "head" for group in cluster["workerGroupSpecs"]):
        problems.append('"head" is reserved for the head group')
    return problems


def test_a_queued_job_is_labelled_for_kueue_created_suspended_and_within_its_limits() -> None:
    queued = job(scheduling={"queueName": "team-a", "priorityClassName": "urgent"})
    rayjob = build_rayjob(queued, default_image=IMAGE)
    labels = rayjob["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels["kueue.x-k8s.io/priority-class"] == "urgent"
    assert rayjob["spec"]["suspend"] is True  # Kueue unsuspends it on admission
    assert kueue_refuses(rayjob) == []
    # The pods carry no queue label: Kueue manages the RayJob, not each pod.
    assert "kueue.x-k8s.io/queue-name" not in worker(rayjob)["template"]["metadata"]["labels"]

    plain = build_rayjob(job(), default_image=IMAGE)
    assert not any(key.startswith("kueue.x-k8s.io/") for key in plain["metadata"]["labels"])
    assert plain["spec"]["suspend"] is False
