"""Small helpers for tests that drive a control plane with the project's kubectl."""

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from llmkube.api import LLMTrainingJob
from llmkube.api.run_identity import RUN_CONFIG_FILE, identity_hash, output_identity
from llmkube.api.runconfig import StorageConfig, training_run_config
from llmkube.storage import open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import publish_version
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.manifests import training_job_manifest
from llmkube.testing.minio import MinioServer

T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.25) -> T:
    """Call `check` until it returns without an AssertionError; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(interval)


def get(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    result = cp.kubectl("get", kind, name, "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def exists(cp: ControlPlane, kind: str, name: str, namespace: str) -> bool:
    return cp.kubectl("get", kind, name, "-n", namespace).returncode == 0


def listed(cp: ControlPlane, kind: str, namespace: str) -> list[dict[str, Any]]:
    result = cp.kubectl("get", kind, "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def credentials_secret(name: str, env: dict[str, str]) -> dict[str, Any]:
    """A Secret holding S3 credentials (e.g. a test MinIO's) under the keys storage reads."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in env.items()},
    }


def apply(cp: ControlPlane, namespace: str, *documents: dict[str, Any]) -> None:
    text = "\n---\n".join(json.dumps(doc) for doc in documents)
    result = cp.kubectl("apply", "-n", namespace, "-f", "-", input=text)
    assert result.returncode == 0, result.stderr


def patch(cp: ControlPlane, kind: str, name: str, namespace: str, body: dict[str, Any]) -> None:
    result = cp.kubectl(
        "patch", kind, name, "-n", namespace, "--type=merge", "-p", json.dumps(body)
    )
    assert result.returncode == 0, result.stderr


def patch_status(
    cp: ControlPlane, kind: str, name: str, namespace: str, status: dict[str, Any]
) -> None:
    """Play the controller of `kind` (KubeRay) by writing its status."""
    result = cp.kubectl(
        "patch",
        kind,
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert result.returncode == 0, result.stderr


def events_for(
    cp: ControlPlane, namespace: str, name: str, kind: str = "LLMTrainingJob"
) -> list[dict[str, Any]]:
    return [
        event
        for event in listed(cp, "events", namespace)
        if event["involvedObject"].get("name") == name
        and event["involvedObject"].get("kind") == kind
    ]


def status_of(cp: ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = get(cp, kind, name, namespace).get("status") or {}
    return status


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status.get("conditions", []) if c["type"] == type_]
    assert found, f"no {type_} condition in {status}"
    return found[0]


def wait_phase(
    cp: ControlPlane, kind: str, name: str, namespace: str, phase: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The status once it reaches `phase`."""

    def check() -> dict[str, Any]:
        status = status_of(cp, kind, name, namespace)
        assert status.get("phase") == phase, status
        return status

    return eventually(check, timeout=timeout)


def publish_as_the_runtime(minio: MinioServer, job: dict[str, Any], staged: Path) -> str:
    """Publish the model files in `staged` as the training job `job`'s run would, through the
    runtime's own publish_version, to the test's MinIO (no Ray runs in this tier); the
    version."""
    run = training_run_config(LLMTrainingJob.model_validate(job))
    storage = StorageConfig(endpoint=minio.endpoint, insecure=True)
    store = open_store(run.output, storage, environ=minio.env)
    store.write_bytes(join(run.output, RUN_CONFIG_FILE), run.model_dump_json().encode())
    return publish_version(
        store,
        run.output,
        staged,
        run=identity_hash(output_identity(run)),
        provenance=run.model_dump_json(by_alias=True).encode(),
    ).version


def staged_files(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def cpu_job(name: str, **spec: Any) -> dict[str, Any]:
    """A training job on the fleet's CPU pool (no GPU, so no pool to ask for)."""
    return training_job_manifest(name, resources={"gpusPerWorker": 0}, **spec)


def rayjob_status(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get(cp, "rayjob", name, namespace).get("status") or {}
    return status


def wait_rayjob(cp: ControlPlane, namespace: str, name: str, deployment_status: str) -> None:
    """Until KubeRay itself has moved the RayJob to `deployment_status` (with a job submitted)."""

    def reached() -> None:
        status = rayjob_status(cp, namespace, name)
        assert status.get("jobDeploymentStatus") == deployment_status, status
        assert status.get("jobId"), status

    eventually(reached, timeout=90)
