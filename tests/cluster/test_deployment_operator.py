"""LLMDeployment against a real apiserver. Tests in a `fleet_namespace` run with KubeRay's real
controller (llmkube.testing.fleet), serving and rolling over in test_fleet.py. The others need no
Ray cluster, or stand in for what KubeRay never does: a training job's RayJob completing again
(`succeed`), as a re-run would publish a new model."""

import json
from pathlib import Path
from typing import Any

from llmkube.api.crd import deployment_crd
from llmkube.api.runconfig import StorageConfig
from llmkube.storage import open_store
from llmkube.storage.models import folder_digest
from llmkube.storage.store import LocalStore
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.fleet import Fleet
from llmkube.testing.manifests import deployment_manifest, training_job_manifest
from llmkube.testing.minio import MinioServer
from llmkube.testing.operator import OperatorProcess
from llmkube.testing.pretrained import publish_adapter, upload_folder, write_tiny_model
from tests.bad_manifests import corpus
from tests.cluster.helpers import (
    apply,
    condition,
    credentials_secret,
    events_for,
    eventually,
    exists,
    get,
    patch,
    patch_status,
    publish_as_the_runtime,
    staged_files,
    status_of,
    wait_phase,
)


def serve_config(rayservice: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(rayservice["spec"]["serveConfigV2"])
    return loaded


def app_args(rayservice: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = serve_config(rayservice)["applications"][0]["args"]["config"]
    return args


def model_version(rayservice: dict[str, Any]) -> str:
    template = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    version: str = template["metadata"]["annotations"]["llmkube.io/model-version"]
    return version


def succeed(cp: ControlPlane, job: str, namespace: str, end_time: str) -> None:
    patch_status(
        cp,
        "rayjob",
        job,
        namespace,
        {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED", "endTime": end_time},
    )


def test_a_rerun_that_publishes_the_same_bytes_rolls_nothing_out(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    storage = {"endpoint": minio.endpoint, "insecure": True, "credentialsSecret": {"name": "s3"}}
    job = training_job_manifest("same", storage=storage, output=f"s3://{bucket}/same/")
    served = deployment_manifest(
        "same", model={"trainingJobRef": {"name": "same"}}, storage=storage
    )
    apply(control_plane, namespace, credentials_secret("s3", minio.env), job, served)
    eventually(lambda: get(control_plane, "rayjob", "same", namespace))

    def publish(weights: bytes, attempt: str) -> str:
        files = {"model.safetensors": weights, "config.json": b"{}"}
        return publish_as_the_runtime(minio, job, staged_files(tmp_path / attempt, files))

    version = publish(b"first weights", "first")
    succeed(control_plane, "same", namespace, "2026-11-28T11:00:00Z")
    rayservice = eventually(lambda: get(control_plane, "rayservice", "same", namespace))
    first = model_version(rayservice)
    # Every replica loads the version the operator saw, whatever model/ points at later.
    assert app_args(rayservice)["modelUri"] == f"s3://{bucket}/same/versions/{version}"
    assert first == version

    def reported() -> None:
        status = status_of(control_plane, "ltj", "same", namespace)
        assert status["model"] == {"uri": f"s3://{bucket}/same/model", "version": version}

    eventually(reported)

    # A re-run publishes the very same bytes again: a new completion time and pointer, the
    # same version. A spec edit made at the same time shows when the reconcile has happened.
    assert publish(b"first weights", "again") == version
    succeed(control_plane, "same", namespace, "2026-11-28T12:00:00Z")
    patch(control_plane, "llmd", "same", namespace, {"spec": {"serving": {"maxTokens": 123}}})

    def reconciled() -> dict[str, Any]:
        rayservice = get(control_plane, "rayservice", "same", namespace)
        assert app_args(rayservice)["serving"]["maxTokens"] == 123
        return rayservice

    assert model_version(eventually(reconciled)) == first

    publish(b"other weights", "other")  # a re-run that trained again
    succeed(control_plane, "same", namespace, "2026-11-28T13:00:00Z")

    def rolled() -> None:
        rayservice = get(control_plane, "rayservice", "same", namespace)
        assert model_version(rayservice) != first

    eventually(rolled)


def test_kubectl_scale_changes_serve_replicas_in_place(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    apply(control_plane, namespace, deployment_manifest("scaled"))
    before = eventually(lambda: get(control_plane, "rayservice", "scaled", namespace))
    scaled = control_plane.kubectl("scale", "llmd", "scaled", "-n", namespace, "--replicas=4")
    assert scaled.returncode == 0, scaled.stderr

    def four() -> dict[str, Any]:
        current = get(control_plane, "rayservice", "scaled", namespace)
        deployments = serve_config(current)["applications"][0]["deployments"]
        assert deployments[0]["num_replicas"] == 4
        return current

    after = eventually(four)
    group = after["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (4, 4, 4)
    # In place: the same object, and nothing KubeRay hashes for a new cluster changed.
    assert after["metadata"]["uid"] == before["metadata"]["uid"]
    assert model_version(after) == model_version(before)
    without_replicas = [
        {k: v for k, v in g.items() if k not in ("replicas", "minReplicas", "maxReplicas")}
        for g in (before, after)
        for g in [g["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]]
    ]
    assert without_replicas[0] == without_replicas[1]
    assert (
        before["spec"]["rayClusterConfig"]["headGroupSpec"]
        == (after["spec"]["rayClusterConfig"]["headGroupSpec"])
    )
    status = eventually(lambda: _replicas(control_plane, namespace, "scaled", 4))
    assert status["selector"] == "llmkube.io/deployment=scaled"
    scale = json.loads(
        control_plane.kubectl(
            "get",
            "--raw",
            f"/apis/llmkube.io/v1alpha1/namespaces/{namespace}/llmdeployments/scaled/scale",
        ).stdout
    )
    assert scale["status"] == {"replicas": 4, "selector": "llmkube.io/deployment=scaled"}


def _replicas(cp: ControlPlane, namespace: str, name: str, count: int) -> dict[str, Any]:
    status = status_of(cp, "llmd", name, namespace)
    assert status.get("replicas") == count, status
    return status


def test_service_service_monitor_and_network_policy_are_built_and_owned(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "api"},
        "stringData": {"apiKey": "sk-test"},
    }
    apply(
        control_plane,
        namespace,
        secret,
        deployment_manifest(
            "watched",
            serving={"apiKeySecret": {"name": "api"}},
            monitoring={"labels": {"release": "prometheus"}, "intervalSeconds": 5},
        ),
    )
    rayservice = eventually(lambda: get(control_plane, "rayservice", "watched", namespace))
    service = eventually(lambda: get(control_plane, "service", "watched", namespace))
    monitor = eventually(lambda: get(control_plane, "servicemonitor", "watched", namespace))
    policy = get(control_plane, "networkpolicy", "watched-serving", namespace)
    assert policy["spec"]["podSelector"] == {"matchLabels": {"llmkube.io/deployment": "watched"}}
    uid = get(control_plane, "llmd", "watched", namespace)["metadata"]["uid"]
    for child in (rayservice, service, monitor, policy):
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    # No RayCluster serves yet (KubeRay names the active one): the Service selects no pod.
    assert "selector" not in service["spec"]
    assert [p["port"] for p in service["spec"]["ports"]] == [8000, 8080]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "5s"}]
    worker = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["volumes"][0]["secret"]["secretName"] == "api"
    assert worker["automountServiceAccountToken"] is False
    assert app_args(rayservice)["apiKeyFile"] == "/etc/llmkube/api-keys/keys"
    assert "sk-test" not in json.dumps(rayservice)


def test_objects_it_does_not_control_are_left_alone_and_reported(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    squatter = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "taken", "labels": {"team": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    apply(control_plane, namespace, squatter, deployment_manifest("taken"))
    status = wait_phase(control_plane, "llmd", "taken", namespace, "Pending")
    ready = condition(status, "Ready")
    assert ready["reason"] == "NameConflict"
    assert "a Service named taken already exists" in ready["message"]

    def conflict_event() -> None:
        events = events_for(control_plane, namespace, "taken", "LLMDeployment")
        reasons = {event["reason"] for event in events}
        assert "NameConflict" in reasons, reasons

    eventually(conflict_event)
    service = get(control_plane, "service", "taken", namespace)
    assert service["spec"]["selector"] == {"app": "web"}  # not patched
    assert "ownerReferences" not in service["metadata"]  # not adopted
    # Once the user removes it, the deployment goes on (the conflict is retried).
    control_plane.kubectl("delete", "service", "taken", "-n", namespace)
    owned = eventually(lambda: get(control_plane, "service", "taken", namespace), timeout=60)
    assert owned["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"


def _without_rules(schema: Any) -> Any:
    """The schema as a CRD from before its CEL rules would have it."""
    if isinstance(schema, dict):
        return {
            key: _without_rules(value)
            for key, value in schema.items()
            if key != "x-kubernetes-validations"
        }
    if isinstance(schema, list):
        return [_without_rules(item) for item in schema]
    return schema


def test_a_spec_made_invalid_while_serving_keeps_its_rayservice_followed(
    control_plane: ControlPlane,
    fleet: Fleet,
    fleet_namespace: str,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    namespace = fleet_namespace
    cpu_only = {"gpusPerReplica": 0}
    apply(control_plane, namespace, deployment_manifest("drifting", resources=cpu_only))

    def starting() -> str:
        # KubeRay names the cluster it brings up; only Ray Serve's health is the test's to say.
        pending = (get(control_plane, "rayservice", "drifting", namespace).get("status") or {}).get(
            "pendingServiceStatus"
        ) or {}
        name: str | None = pending.get("rayClusterName")
        assert name, pending
        return name

    fleet.serve_healthy(namespace, eventually(starting, timeout=60))
    wait_phase(control_plane, "llmd", "drifting", namespace, "Ready", timeout=90)

    # Only a CRD without today's rules lets an invalid spec in (Helm never upgrades CRDs).
    current, older = tmp_path / "current.json", tmp_path / "older.json"
    current.write_text(json.dumps(deployment_crd()))
    older.write_text(json.dumps(_without_rules(deployment_crd())))
    invalid = {"spec": {"autoscaling": {"minReplicas": 9, "maxReplicas": 2}}}
    try:
        control_plane.install_crds([older])
        patch(control_plane, "llmd", "drifting", namespace, invalid)
    finally:
        control_plane.install_crds([current])

    def both_said() -> None:
        status = status_of(control_plane, "llmd", "drifting", namespace)
        applied = condition(status, "SpecApplied")
        assert (applied["status"], applied["reason"]) == ("False", "InvalidSpec"), applied
        assert "minReplicas exceeds" in applied["message"]
        assert status["phase"] == "Ready"  # still serving, and said so
        assert status["readyReplicas"] == 2

    eventually(both_said)
    assert exists(control_plane, "rayservice", "drifting", namespace)

    patch(control_plane, "llmd", "drifting", namespace, {"spec": {"autoscaling": None}})

    def fixed() -> None:
        applied = condition(status_of(control_plane, "llmd", "drifting", namespace), "SpecApplied")
        assert (applied["status"], applied["reason"]) == ("True", "Applied"), applied

    eventually(fixed)


def test_specs_an_older_crd_lets_through_end_as_invalid_spec(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> None:
    """Helm never upgrades a chart's CRDs, so a cluster may run this operator with CRDs that lack
    today's CEL rules: the operator's own validation still refuses what they would have."""
    bad = [m for m in corpus() if m.same_message and m.document["kind"] == "LLMDeployment"]
    assert len(bad) >= 4
    current, older = tmp_path / "current.json", tmp_path / "older.json"
    current.write_text(json.dumps(deployment_crd()))
    older.write_text(json.dumps(_without_rules(deployment_crd())))
    try:
        control_plane.install_crds([older])
        for manifest in bad:
            result = control_plane.kubectl("apply", "-n", namespace, "-f", str(manifest.path))
            assert result.returncode == 0, result.stderr
    finally:
        control_plane.install_crds([current])
    for manifest in bad:
        name = manifest.document["metadata"]["name"]  # type: ignore[index]
        status = wait_phase(control_plane, "llmd", name, namespace, "Failed")
        ready = condition(status, "Ready")
        assert ready["reason"] == "InvalidSpec"
        assert manifest.llmkube_says in ready["message"]
        assert not exists(control_plane, "rayservice", name, namespace)


def test_a_missing_training_job_is_named(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    apply(
        control_plane,
        namespace,
        deployment_manifest("orphan", model={"trainingJobRef": {"name": "nobody"}}),
    )
    status = wait_phase(control_plane, "llmd", "orphan", namespace, "WaitingForModel")
    ready = condition(status, "Ready")
    assert ready["reason"] == "TrainingJobNotFound"
    assert "LLMTrainingJob nobody not found" in ready["message"]


def test_serving_works_without_prometheus_operator(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    crd = "servicemonitors.monitoring.coreos.com"
    saved = control_plane.kubectl("get", "crd", crd, "-o", "json")
    assert saved.returncode == 0, saved.stderr
    assert control_plane.kubectl("delete", "crd", crd).returncode == 0
    try:
        apply(control_plane, namespace, deployment_manifest("plain"))
        eventually(lambda: get(control_plane, "rayservice", "plain", namespace))

        def explained() -> None:
            monitored = condition(status_of(control_plane, "llmd", "plain", namespace), "Monitored")
            assert (monitored["status"], monitored["reason"]) == (
                "False",
                "ServiceMonitorUnavailable",
            )
            assert "monitoring.serviceMonitor: false" in monitored["message"]

        eventually(explained)
        assert exists(control_plane, "service", "plain", namespace)
    finally:
        definition = json.loads(saved.stdout)
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"):
            definition["metadata"].pop(key, None)
        definition.pop("status", None)
        restored = control_plane.kubectl(
            "apply", "--server-side", "-f", "-", input=json.dumps(definition)
        )
        assert restored.returncode == 0, restored.stderr
        control_plane.install_crds([])  # waits until every CRD is Established again


def test_the_deployments_gauge_counts_phases(
    control_plane: ControlPlane, namespace: str, operator: OperatorProcess
) -> None:
    apply(control_plane, namespace, deployment_manifest("counted"))
    eventually(lambda: get(control_plane, "rayservice", "counted", namespace))

    def exported() -> None:
        text = operator.metrics()
        deploying = [
            line
            for line in text.splitlines()
            if line.startswith('llmkube_deployments{phase="Deploying"}')
        ]
        assert deploying, text
        assert float(deploying[0].split()[-1]) >= 1
        labels = f'{{deployment="counted",namespace="{namespace}"}}'
        assert f"llmkube_deployment_desired_replicas{labels} 2.0" in text
        assert f"llmkube_deployment_max_replicas{labels}" not in text  # not autoscaled
        assert f"llmkube_deployment_ready_replicas{labels} 0.0" in text

    eventually(exported)
    assert control_plane.kubectl("delete", "llmd", "counted", "-n", namespace).returncode == 0
    eventually(lambda: 'deployment="counted"' not in operator.metrics())


def _user_config_adapters(rayservice: dict[str, Any]) -> dict[str, str]:
    deployment = serve_config(rayservice)["applications"][0]["deployments"][0]
    return {a["name"]: a["uri"] for a in deployment["user_config"]["adapters"]}


def test_adapters_are_checked_in_minio_and_change_in_place(
    control_plane: ControlPlane,
    namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    storage = StorageConfig(endpoint=minio.endpoint, insecure=True)
    store = open_store(f"s3://{bucket}", storage, environ=minio.env)
    folder = write_tiny_model(tmp_path / "llama", "llama")
    base = upload_folder(store, f"s3://{bucket}/models/tiny-llama", folder)
    digest = folder_digest(store, base)

    def adapter(path: str, seed: int, **changes: Any) -> str:
        settings: dict[str, Any] = {"base_digest": digest, **changes}
        return publish_adapter(
            store, f"s3://{bucket}/{path}", base_folder=folder, base_uri=base, seed=seed, **settings
        )

    uris = {
        "alpha": adapter("adapters/alpha", 1),
        "gamma": adapter("adapters/gamma", 2),
        "wide": adapter("adapters/wide", 3, rank=16),
        "stale": adapter("adapters/stale", 4, base_digest="sha256:" + "0" * 64),
    }
    # A LoRA job whose RayJob the test succeeds (as KubeRay would); its adapter is in MinIO.
    job = training_job_manifest(
        "lora-job",
        model={"pretrained": {"uri": base}},
        finetune={"method": "lora"},
        dataset={"source": f"s3://{bucket}/chat/", "format": "chat"},
        output=f"s3://{bucket}/jobs/lora-job/",
    )
    staged = tmp_path / "lora-job"
    staged.mkdir()
    publish_adapter(
        LocalStore(), staged.as_uri(), base_folder=folder, base_uri=base, base_digest=digest, seed=5
    )
    tuned = publish_as_the_runtime(minio, job, staged)
    storage_spec = {
        "endpoint": minio.endpoint,
        "insecure": True,
        "credentialsSecret": {"name": "s3"},
    }
    apply(control_plane, namespace, credentials_secret("s3", minio.env), job)
    apply(
        control_plane,
        namespace,
        deployment_manifest(
            "multi",
            storage=storage_spec,
            serving={"maxLoraRank": 8},
            model={
                "uri": base,
                "adapters": [
                    {"name": "alpha", "uri": uris["alpha"]},
                    {"name": "tuned", "trainingJobRef": {"name": "lora-job"}},
                    {"name": "wide", "uri": uris["wide"]},
                    {"name": "stale", "uri": uris["stale"]},
                ],
            },
        ),
    )

    def checked() -> None:
        status = status_of(control_plane, "llmd", "multi", namespace)
        found = status.get("adapters") or []
        states = {a["name"]: a["state"] for a in found}
        assert states == {
            "alpha": "Ready",
            "tuned": "Waiting",
            "wide": "Refused",
            "stale": "Refused",
        }, status

    eventually(checked)
    status = status_of(control_plane, "llmd", "multi", namespace)
    refused = condition(status, "AdaptersReady")
    assert (refused["status"], refused["reason"]) == ("False", "AdapterRefused")
    assert "rank 16, above serving.maxLoraRank 8" in refused["message"]
    assert "stale: " in refused["message"]
    assert "retrain the adapter" in refused["message"]
    first = get(control_plane, "rayservice", "multi", namespace)
    assert _user_config_adapters(first) == {"alpha": uris["alpha"]}
    assert app_args(first)["modelUri"] == base
    assert "adapters" not in app_args(first) or app_args(first)["adapters"] == []

    # The job publishes: its adapter joins, in place (no new Ray cluster).
    eventually(lambda: get(control_plane, "rayjob", "lora-job", namespace))
    succeed(control_plane, "lora-job", namespace, "2026-11-28T11:00:00Z")

    def joined() -> dict[str, Any]:
        current = get(control_plane, "rayservice", "multi", namespace)
        assert "tuned" in _user_config_adapters(current)
        return current

    second = eventually(joined)
    # Pinned to the version the operator checked, like the model.
    assert _user_config_adapters(second)["tuned"] == f"s3://{bucket}/jobs/lora-job/versions/{tuned}"
    # An adapter-only edit: the serve config changes, nothing KubeRay hashes for a cluster does.
    patch(
        control_plane,
        "llmd",
        "multi",
        namespace,
        {
            "spec": {
                "model": {
                    "uri": base,
                    "adapters": [
                        {"name": "gamma", "uri": uris["gamma"]},
                        {"name": "tuned", "trainingJobRef": {"name": "lora-job"}},
                    ],
                }
            }
        },
    )

    def edited() -> dict[str, Any]:
        current = get(control_plane, "rayservice", "multi", namespace)
        assert set(_user_config_adapters(current)) == {"gamma", "tuned"}
        return current

    third = eventually(edited)
    assert third["metadata"]["uid"] == first["metadata"]["uid"]
    assert third["spec"]["rayClusterConfig"] == first["spec"]["rayClusterConfig"]
    assert app_args(third) == app_args(first)
    eventually(
        lambda: (
            condition(status_of(control_plane, "llmd", "multi", namespace), "AdaptersReady")[
                "status"
            ]
            == "True"
        )
    )

    # A deployment of the LoRA job itself: its adapter, on the base it records.
    apply(
        control_plane,
        namespace,
        deployment_manifest(
            "tuned", storage=storage_spec, model={"trainingJobRef": {"name": "lora-job"}}
        ),
    )
    handed = eventually(lambda: get(control_plane, "rayservice", "tuned", namespace))
    assert app_args(handed)["modelUri"] == f"s3://{bucket}/jobs/lora-job/versions/{tuned}"
