"""Table tests: every Ray pod the operator asks for is locked down, carries only the credentials
it needs, and is fenced in by a NetworkPolicy whose selectors admit exactly what they should."""

from typing import Any

import pytest

from llmkube.api import LLMDeployment, LLMTrainingJob
from llmkube.api.runconfig import serve_run_config
from llmkube.operator.deployment.builders import (
    METRICS_PORT,
    SERVE_PORT,
    build_deployment_network_policy,
    build_rayservice,
)
from llmkube.operator.network_policy import DASHBOARD_PORT, NAMESPACE_NAME_LABEL
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.training.builders import build_rayjob, build_training_network_policy

URI = "s3://models/chat/model"
SETTINGS = OperatorSettings(ray_operator_namespace="ray-system", monitoring_namespace="obs")
GCS_PORT = 6379


def deployment(name: str = "chat") -> LLMDeployment:
    return LLMDeployment.model_validate(
        {
            "metadata": {"name": name, "namespace": "ml", "uid": f"u-{name}"},
            "spec": {
                "model": {"uri": URI},
                "serving": {"apiKeySecret": {"name": "keys"}},
                "storage": {"credentialsSecret": {"name": "s3"}},
            },
        }
    )


def training_job(name: str = "tune") -> LLMTrainingJob:
    return LLMTrainingJob.model_validate(
        {
            "metadata": {"name": name, "namespace": "ml", "uid": f"u-{name}"},
            "spec": {
                "dataset": {"source": "s3://data/text"},
                "training": {"maxSteps": 10},
                "output": "s3://models/tune/",
                "storage": {"credentialsSecret": {"name": "s3"}},
            },
        }
    )


def serving_pods(dep: LLMDeployment) -> dict[str, dict[str, Any]]:
    run_config = serve_run_config(dep, model_uri=URI, keys_mounted=True)
    cluster = build_rayservice(dep, run_config, model_version="v", default_image="img")["spec"][
        "rayClusterConfig"
    ]
    return {
        "serving head": cluster["headGroupSpec"]["template"],
        "serving worker": cluster["workerGroupSpecs"][0]["template"],
    }


def training_pods(job: LLMTrainingJob) -> dict[str, dict[str, Any]]:
    spec = build_rayjob(job, default_image="img")["spec"]
    return {
        "training head": spec["rayClusterSpec"]["headGroupSpec"]["template"],
        "training worker": spec["rayClusterSpec"]["workerGroupSpecs"][0]["template"],
        "job submitter": spec["submitterPodTemplate"],
    }


ALL_PODS = {**serving_pods(deployment()), **training_pods(training_job())}


@pytest.mark.parametrize("pod", sorted(ALL_PODS))
def test_every_ray_pod_is_locked_down(pod: str) -> None:
    spec = ALL_PODS[pod]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in spec["containers"]:
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }


def _secrets(template: dict[str, Any]) -> set[str]:
    """The Secrets a pod template can read, by environment or volume."""
    spec = template["spec"]
    names = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for container in spec["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    names |= {
        volume["secret"]["secretName"] for volume in spec.get("volumes", []) if "secret" in volume
    }
    return names


@pytest.mark.parametrize(
    ("pod", "secrets"),
    [
        ("serving head", set()),  # Serve's controller and proxy: no model, no keys
        ("serving worker", {"s3", "keys"}),  # loads the model, checks API keys
        ("training head", {"s3"}),  # the driver reads the dataset and publishes the model
        ("training worker", {"s3"}),
        ("job submitter", set()),  # only runs `ray job submit`
    ],
)
def test_each_pod_gets_only_the_credentials_it_needs(pod: str, secrets: set[str]) -> None:
    assert _secrets(ALL_PODS[pod]) == secrets


# --- NetworkPolicy selectors ---------------------------------------------------------------


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the builders use matchLabels only"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def admits(
    policy: dict[str, Any],
    *,
    target: dict[str, str],
    source: dict[str, str] | None,
    source_namespace: str,
    port: int,
) -> bool:
    """NetworkPolicy ingress semantics (same-namespace policy, matchLabels selectors): whether a
    pod labelled `source` in `source_namespace` may reach `port` of a pod labelled `target`.
    `source` None stands for a client outside the cluster."""
    spec = policy["spec"]
    if not _matches(spec["podSelector"], target):
        return True  # not selected: this policy does not restrict it
    own_namespace = policy["metadata"]["namespace"]
    for rule in spec["ingress"]:
        if "ports" in rule and port not in {p["port"] for p in rule["ports"]}:
            continue
        if "from" not in rule:
            return True
        for peer in rule["from"]:
            if source is None:
                continue
            namespace_labels = {NAMESPACE_NAME_LABEL: source_namespace}
            if "namespaceSelector" in peer:
                namespace_ok = _matches(peer["namespaceSelector"], namespace_labels)
            else:
                namespace_ok = source_namespace == own_namespace
            pods_ok = _matches(peer.get("podSelector", {}), source)
            if namespace_ok and pods_ok:
                return True
    return False


KUBERAY = {"app.kubernetes.io/name": "kuberay-operator"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}
CHAT_POD = ALL_PODS["serving worker"]["metadata"]["labels"]
OTHER_DEPLOYMENT_POD = serving_pods(deployment("other"))["serving worker"]["metadata"]["labels"]
TRAINING_POD = ALL_PODS["training head"]["metadata"]["labels"]
SUBMITTER_POD = ALL_PODS["job submitter"]["metadata"]["labels"]
SOME_POD = {"app": "web"}


@pytest.mark.parametrize(
    ("source", "namespace", "port", "admitted"),
    [
        (ALL_PODS["serving head"]["metadata"]["labels"], "ml", GCS_PORT, True),  # own cluster
        (CHAT_POD, "ml", DASHBOARD_PORT, True),
        (OTHER_DEPLOYMENT_POD, "ml", GCS_PORT, False),  # another deployment's cluster
        (OTHER_DEPLOYMENT_POD, "ml", DASHBOARD_PORT, False),
        (SOME_POD, "ml", DASHBOARD_PORT, False),  # job submission = code execution
        (KUBERAY, "ray-system", DASHBOARD_PORT, True),  # deploys Serve configs
        (KUBERAY, "ray-system", GCS_PORT, False),
        (KUBERAY, "ml", DASHBOARD_PORT, False),  # the wrong namespace
        (SOME_POD, "ml", SERVE_PORT, True),  # clients, with API keys
        (None, "", SERVE_PORT, True),
        (PROMETHEUS, "obs", METRICS_PORT, True),
        (SOME_POD, "obs", METRICS_PORT, True),  # the monitoring namespace, any pod
        (SOME_POD, "ml", METRICS_PORT, False),
        (PROMETHEUS, "obs", DASHBOARD_PORT, False),
        (None, "", 10001, False),  # the Ray client port
    ],
)
def test_the_deployment_policy_admits_exactly(
    source: dict[str, str] | None, namespace: str, port: int, admitted: bool
) -> None:
    policy = build_deployment_network_policy(deployment(), SETTINGS)
    assert (
        admits(policy, target=CHAT_POD, source=source, source_namespace=namespace, port=port)
        is admitted
    )


@pytest.mark.parametrize(
    ("source", "namespace", "port", "admitted"),
    [
        (SUBMITTER_POD, "ml", DASHBOARD_PORT, True),  # KubeRay's submitter pod, ours
        (ALL_PODS["training worker"]["metadata"]["labels"], "ml", GCS_PORT, True),
        (CHAT_POD, "ml", DASHBOARD_PORT, False),
        (KUBERAY, "ray-system", DASHBOARD_PORT, True),
        (None, "", SERVE_PORT, False),  # training serves nothing
        (PROMETHEUS, "obs", METRICS_PORT, True),
    ],
)
def test_the_training_policy_admits_exactly(
    source: dict[str, str] | None, namespace: str, port: int, admitted: bool
) -> None:
    policy = build_training_network_policy(training_job(), SETTINGS)
    assert (
        admits(policy, target=TRAINING_POD, source=source, source_namespace=namespace, port=port)
        is admitted
    )


def test_the_policy_selects_every_pod_of_its_cluster_and_no_other() -> None:
    serving = build_deployment_network_policy(deployment(), SETTINGS)["spec"]["podSelector"]
    training = build_training_network_policy(training_job(), SETTINGS)["spec"]["podSelector"]
    for name, template in ALL_PODS.items():
        labels = template["metadata"]["labels"]
        assert _matches(serving, labels) is name.startswith("serving"), name
        assert _matches(training, labels) is not name.startswith("serving"), name
    assert not _matches(serving, OTHER_DEPLOYMENT_POD)


def test_the_ray_operator_may_be_in_any_namespace_when_none_is_set() -> None:
    policy = build_deployment_network_policy(deployment(), OperatorSettings())
    assert admits(
        policy, target=CHAT_POD, source=KUBERAY, source_namespace="default", port=DASHBOARD_PORT
    )


def test_settings_come_from_the_environment() -> None:
    settings = OperatorSettings.from_env(
        {
            "LLMKUBE_NETWORK_POLICIES": "false",
            "LLMKUBE_RAY_OPERATOR_LABELS": "app=kuberay, tier=control",
            "LLMKUBE_MONITORING_NAMESPACE": "prom",
        }
    )
    assert settings.network_policies is False
    assert settings.ray_operator_labels == {"app": "kuberay", "tier": "control"}
    assert settings.monitoring_namespace == "prom"


def test_a_job_and_a_deployment_of_one_name_get_policies_of_their_own() -> None:
    serving = build_deployment_network_policy(deployment("twin"), SETTINGS)
    training = build_training_network_policy(training_job("twin"), SETTINGS)
    assert serving["metadata"]["name"] != training["metadata"]["name"]
