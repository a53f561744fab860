"""Manifests tests and benchmarks create: small, valid, and cheap for the operator to build."""

from typing import Any


def training_job_manifest(name: str, **spec: Any) -> dict[str, Any]:
    """A valid tiny LLMTrainingJob; keyword arguments replace top-level spec fields."""
    return {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"preset": "tiny"},
            "dataset": {"source": "s3://datasets/text/"},
            "training": {"maxSteps": 1000},
            "output": f"s3://models/{name}/",
            **spec,
        },
    }


def deployment_manifest(name: str, **spec: Any) -> dict[str, Any]:
    """A valid LLMDeployment of two replicas; keyword arguments replace top-level spec fields.
    Open (allowUnauthenticated) unless the test names an API-key Secret."""
    serving = spec.pop("serving", {})
    if "apiKeySecret" not in serving:
        serving = {"allowUnauthenticated": True, **serving}
    return {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "s3://models/base/model"},
            "replicas": 2,
            "serving": serving,
            **spec,
        },
    }
