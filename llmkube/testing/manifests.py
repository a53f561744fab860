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
