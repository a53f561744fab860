"""Secret values reach pods by reference only: none of them appears in anything the operator
writes or logs, even while it reads storage with them and fails."""

import json

from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.minio import MinioServer
from llmkube.testing.operator import OperatorProcess
from tests.cluster.helpers import apply, cpu_job, credentials_secret, eventually, get, wait_rayjob

ACCESS_KEY = "AKIA-leak-check-id"
SECRET_KEY = "leak-check-secret-value"
API_KEY = "sk-leak-check-api-key"
SECRET_TEXT = (ACCESS_KEY, SECRET_KEY, API_KEY)


def test_no_secret_text_in_children_events_status_or_logs(
    control_plane: ControlPlane,
    fleet_namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
) -> None:
    namespace = fleet_namespace  # KubeRay's own children and Events are checked too
    storage = {
        "endpoint": minio.endpoint,
        "insecure": True,
        "credentialsSecret": {"name": "leaky"},
    }
    api_keys = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "leaky-keys"},
        "stringData": {"apiKey": API_KEY},
    }
    deployment = {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "guarded"},
        "spec": {
            "model": {"uri": "s3://models/base/model"},
            "storage": storage,
            "serving": {"apiKeySecret": {"name": "leaky-keys"}},
        },
    }
    apply(
        control_plane,
        namespace,
        # Wrong credentials for this MinIO: the operator's reads with them fail, and say so.
        credentials_secret(
            "leaky", {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        ),
        api_keys,
        cpu_job("leaky-job", storage=storage),
        deployment,
    )
    eventually(lambda: get(control_plane, "rayservice", "guarded", namespace))
    wait_rayjob(control_plane, namespace, "leaky-job", "Running")

    def progress_read_and_refused() -> None:
        assert f"progress of {namespace}/leaky-job unreadable" in operator.log()

    eventually(progress_read_and_refused, timeout=60)

    written = [
        control_plane.kubectl("get", kinds, "-n", namespace, "-o", "json").stdout
        for kinds in (
            "events",
            "llmtrainingjobs,llmdeployments",
            "configmaps,services,networkpolicies",
            "rayjobs,rayservices",
        )
    ]
    assert all(json.loads(listing)["items"] is not None for listing in written)
    for text in SECRET_TEXT:
        for listing in written:
            assert text not in listing
        assert text not in operator.log()
