"""Table tests of the deployment builders and status mapping (pure functions)."""

import json
from pathlib import PurePosixPath
from typing import Any

import pytest

from llmkube.api import LLMDeployment, LLMDeploymentStatus
from llmkube.api.deployment import AdapterStatus, ServedModel
from llmkube.api.runconfig import API_KEYS_FILE, ServeRunConfig, serve_run_config
from llmkube.operator.conditions import find
from llmkube.operator.deployment.adapters import AdapterChoice
from llmkube.operator.deployment.builders import (
    build_rayservice,
    build_service,
    build_service_monitor,
    endpoint,
    selector,
)
from llmkube.operator.deployment.reconcile import model_version
from llmkube.operator.deployment.status import ModelChoice, deployment_status

URI = "s3://models/chat/model"


def deployment(**spec: Any) -> LLMDeployment:
    return LLMDeployment.model_validate(
        {
            "metadata": {"name": "chat", "namespace": "ml", "uid": "u-2", "generation": 4},
            "spec": {"model": {"uri": URI}, **spec},
        }
    )


def rayservice(dep: LLMDeployment, version: str = "v1") -> dict[str, Any]:
    return build_rayservice(
        dep, serve_run_config(dep, model_uri=URI), model_version=version, default_image="img"
    )


def serve(rs: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(rs["spec"]["serveConfigV2"])["applications"][0]
    return config


@pytest.mark.parametrize(
    ("spec", "replicas", "actor", "limits"),
    [
        (
            {},
            1,
            {"num_cpus": 2, "num_gpus": 1},
            {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
        ),
        (
            {"replicas": 3, "resources": {"gpusPerReplica": 0, "cpusPerReplica": 4}},
            3,
            {"num_cpus": 4, "num_gpus": 0},
            {"cpu": "4", "memory": "8Gi"},
        ),
    ],
)
def test_replicas_and_resources(
    spec: dict[str, Any], replicas: int, actor: dict[str, int], limits: dict[str, str]
) -> None:
    rs = rayservice(deployment(**spec))
    server = serve(rs)["deployments"][0]
    assert (server["num_replicas"], server["ray_actor_options"]) == (replicas, actor)
    group = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (replicas,) * 3
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": limits, "limits": limits}


def test_the_serve_app_gets_the_run_config() -> None:
    dep = deployment(serving={"maxBatchSize": 8, "maxTokens": 64})
    app = serve(rayservice(dep))
    assert app["import_path"] == "llmkube.runtime.serve:app"
    config = ServeRunConfig.model_validate(app["args"]["config"])
    assert (config.model_uri, config.serving.max_batch_size, config.serving.max_tokens) == (
        URI,
        8,
        64,
    )
    assert app["deployments"][0]["max_ongoing_requests"] == 128  # 2 x maxConcurrentRequests


@pytest.mark.parametrize("strategy", ["NewCluster", "None"])
def test_upgrade_strategy(strategy: str) -> None:
    rs = rayservice(deployment(rollout={"strategy": strategy}))
    assert rs["spec"]["upgradeStrategy"] == {"type": strategy}


def test_only_replica_fields_change_with_replicas_and_only_the_version_with_the_model() -> None:
    one, four = rayservice(deployment(replicas=1)), rayservice(deployment(replicas=4))
    strip = ("replicas", "minReplicas", "maxReplicas")
    groups = [
        {
            k: v
            for k, v in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].items()
            if k not in strip
        }
        for rs in (one, four)
    ]
    assert groups[0] == groups[1]
    assert (
        one["spec"]["rayClusterConfig"]["headGroupSpec"]
        == four["spec"]["rayClusterConfig"]["headGroupSpec"]
    )
    other_model = rayservice(deployment(replicas=1), version="v2")
    assert other_model["spec"]["rayClusterConfig"] != one["spec"]["rayClusterConfig"]


def test_api_keys_are_mounted_and_credentials_go_by_reference_to_the_replicas_only() -> None:
    dep = deployment(
        serving={"apiKeySecret": {"name": "keys", "key": "k"}},
        storage={"credentialsSecret": {"name": "s3"}},
    )
    run_config = serve_run_config(dep, model_uri=URI, keys_mounted=True)
    assert (run_config.api_key_file, run_config.api_key_env) == (API_KEYS_FILE, None)
    rs = build_rayservice(dep, run_config, model_version="v1", default_image="img")
    cluster = rs["spec"]["rayClusterConfig"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    env = worker["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env if "valueFrom" in e}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"},
    }
    # A mounted Secret follows a key rotation; an environment variable would not.
    assert worker["volumes"] == [
        {
            "name": "api-keys",
            "secret": {"secretName": "keys", "items": [{"key": "k", "path": "keys"}]},
        }
    ]
    mount = worker["containers"][0]["volumeMounts"][0]
    assert (mount["mountPath"], mount["readOnly"]) == (
        PurePosixPath(API_KEYS_FILE).parent.as_posix(),
        True,
    )
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "volumes" not in head
    assert not any("valueFrom" in e for e in head["containers"][0]["env"])


def test_without_a_key_secret_nothing_is_mounted_and_the_replica_is_open() -> None:
    dep = deployment(serving={"allowUnauthenticated": True})
    run_config = serve_run_config(dep, model_uri=URI, keys_mounted=True)
    assert (run_config.api_key_file, run_config.api_key_env) == (None, None)
    worker = rayservice(dep)["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["volumes"] == []


def test_service_monitor_service_endpoint_and_selector() -> None:
    dep = deployment(monitoring={"labels": {"release": "kps"}, "intervalSeconds": 30})
    monitor = build_service_monitor(dep)
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    service = build_service(dep, "chat-x7k2p")
    assert service["spec"]["selector"] == {
        "llmkube.io/deployment": "chat",
        "ray.io/cluster": "chat-x7k2p",
        "ray.io/serve": "true",
    }
    # Before KubeRay makes a cluster active, no pod gets traffic.
    assert build_service(dep, None)["spec"]["selector"] is None
    assert endpoint(dep) == "http://chat.ml.svc.cluster.local:8000/v1"
    assert selector(dep) == "llmkube.io/deployment=chat"


def test_model_version_changes_with_each_publication() -> None:
    assert model_version(URI, "2026-01-01T00:00:00Z") != model_version(URI, "2026-01-02T00:00:00Z")
    assert model_version(URI, None) == model_version(URI, None)


READY_CONDITION = {"type": "Ready", "status": "True"}


@pytest.mark.parametrize(
    ("current_phase", "rayservice_status", "phase", "reason"),
    [
        (None, {}, "Deploying", "Deploying"),
        (None, {"conditions": [READY_CONDITION], "numServeEndpoints": 1}, "Ready", "Serving"),
        ("Ready", {"conditions": [{"type": "Ready", "status": "False"}]}, "Degraded", "NotServing"),
        (
            "Deploying",
            {"conditions": [{"type": "Ready", "status": "False"}]},
            "Deploying",
            "Deploying",
        ),
        (
            None,
            {"activeServiceStatus": {"applicationStatuses": {"llm": {"status": "DEPLOY_FAILED"}}}},
            "Failed",
            "ServeDeployFailed",
        ),
    ],
)
def test_status_from_the_rayservice(
    current_phase: str | None, rayservice_status: dict[str, Any], phase: str, reason: str
) -> None:
    dep = deployment(replicas=2)
    status = deployment_status(
        LLMDeploymentStatus(phase=current_phase),  # type: ignore[arg-type]
        dep,
        choice=ModelChoice(ServedModel(uri=URI, version="v1")),
        rayservice_name="chat",
        rayservice={"status": rayservice_status},
        now="T",
    )
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert (status.phase, ready.reason, ready.observed_generation) == (phase, reason, 4)


WAITS = "1 of 3 Ray pods cannot be scheduled: each needs 2 x nvidia.com/gpu ..."
UPGRADING = {"type": "UpgradeInProgress", "status": "True"}


@pytest.mark.parametrize(
    ("rayservice_status", "phase", "ready_reason", "upgrade_reason"),
    [
        ({}, "Deploying", "Unschedulable", "Stable"),
        # A rollout's new cluster waits: the old one serves on, and the rollout says why.
        (
            {"conditions": [READY_CONDITION, UPGRADING], "numServeEndpoints": 2},
            "Ready",
            "Serving",
            "Unschedulable",
        ),
    ],
)
def test_pods_the_scheduler_cannot_place_are_reported(
    rayservice_status: dict[str, Any], phase: str, ready_reason: str, upgrade_reason: str
) -> None:
    status = deployment_status(
        LLMDeploymentStatus(),
        deployment(replicas=2),
        choice=ModelChoice(ServedModel(uri=URI, version="v2")),
        rayservice_name="chat",
        rayservice={"status": rayservice_status},
        unschedulable=WAITS,
        now="T",
    )
    ready = find(status.conditions, "Ready")
    upgrade = find(status.conditions, "UpgradeInProgress")
    assert ready is not None
    assert upgrade is not None
    assert (status.phase, ready.reason, upgrade.reason) == (phase, ready_reason, upgrade_reason)
    assert status.waiting_for == WAITS
    assert WAITS in (ready.message if phase == "Deploying" else upgrade.message)


def test_waiting_for_a_model_deploys_nothing() -> None:
    status = deployment_status(
        LLMDeploymentStatus(),
        deployment(),
        choice=ModelChoice(None, "WaitingForModel", "waiting for LLMTrainingJob x"),
        rayservice_name="chat",
        rayservice=None,
        now="T",
    )
    assert (status.phase, status.replicas, status.endpoint) == ("WaitingForModel", 0, None)


def test_adapters_travel_in_user_config_so_changing_them_touches_nothing_else() -> None:
    dep = deployment(replicas=2)
    plain = build_rayservice(
        dep, serve_run_config(dep, model_uri=URI), model_version="v1", default_image="img"
    )
    adapters = {"sql": "s3://adapters/sql/model", "docs": "s3://adapters/docs/model"}
    with_adapters = build_rayservice(
        dep,
        serve_run_config(dep, model_uri=URI, adapter_uris=adapters),
        model_version="v1",
        default_image="img",
    )
    server = serve(with_adapters)["deployments"][0]
    assert server["user_config"] == {
        "adapters": [
            {"name": "docs", "uri": "s3://adapters/docs/model"},
            {"name": "sql", "uri": "s3://adapters/sql/model"},
        ]
    }
    assert serve(plain)["deployments"][0]["user_config"] == {"adapters": []}
    # Ray Serve restarts replicas when args change; adapters must not be in them.
    assert serve(with_adapters)["args"] == serve(plain)["args"]
    assert with_adapters["spec"]["rayClusterConfig"] == plain["spec"]["rayClusterConfig"]


@pytest.mark.parametrize(
    ("states", "condition", "reason"),
    [
        ([], None, None),
        (["Ready", "Ready"], "True", "AdaptersReady"),
        (["Ready", "Waiting"], "False", "AdapterWaiting"),
        (["Waiting", "Refused"], "False", "AdapterRefused"),
    ],
)
def test_adapter_states_become_one_condition(
    states: list[str], condition: str | None, reason: str | None
) -> None:
    dep = deployment()
    adapters = AdapterChoice(
        statuses=[
            AdapterStatus(name=f"a{i}", state=state, message=None if state == "Ready" else "why")  # type: ignore[arg-type]
            for i, state in enumerate(states)
        ]
    )
    status = deployment_status(
        LLMDeploymentStatus(),
        dep,
        choice=ModelChoice(ServedModel(uri=URI, version="v1")),
        rayservice_name="chat",
        rayservice=None,
        adapters=adapters,
        now="t",
    )
    found = find(status.conditions, "AdaptersReady")
    assert (found.status if found else None, found.reason if found else None) == (
        condition,
        reason,
    )
    assert [a.state for a in status.adapters] == states


def test_a_queued_deployment_is_labelled_created_suspended_and_reported_queued() -> None:
    queued = deployment(scheduling={"queueName": "team-a", "priorityClassName": "serving"})
    built = rayservice(queued)
    labels = built["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels["kueue.x-k8s.io/priority-class"] == "serving"
    assert built["spec"]["rayClusterConfig"]["suspend"] is True  # Kueue resumes it
    assert "suspend" not in rayservice(deployment())["spec"]["rayClusterConfig"]

    def status_of(current: LLMDeploymentStatus) -> LLMDeploymentStatus:
        return deployment_status(
            current,
            queued,
            choice=ModelChoice(ServedModel(uri=URI, version="v1")),
            rayservice_name="chat",
            rayservice={**built, "status": {}},
            now="T",
        )

    waiting = status_of(LLMDeploymentStatus())
    ready = find(waiting.conditions, "Ready")
    assert ready is not None
    assert (waiting.phase, ready.reason) == ("Queued", "Queued")
    assert "LocalQueue team-a" in ready.message
    preempted = status_of(LLMDeploymentStatus(phase="Ready"))
    again = status_of(preempted)  # stays Preempted on the next reconcile
    for status in (preempted, again):
        ready = find(status.conditions, "Ready")
        assert ready is not None
        assert (status.phase, ready.reason) == ("Queued", "Preempted")
