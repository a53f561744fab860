"""Deterministic names, standard labels and owner references of the objects the operator creates.

Deterministic names are what make reconciles idempotent: a restarted operator finds, rather than
duplicates, what it created before.
"""

import hashlib

from llmkube.api.base import GROUP_VERSION
from llmkube.api.common import ObjectMeta

MANAGED_BY = "llmkube-operator"
TRAINING_JOB_LABEL = "llmkube.io/training-job"
TUNING_JOB_LABEL = "llmkube.io/tuning-job"
DEPLOYMENT_LABEL = "llmkube.io/deployment"
MODEL_VERSION_ANNOTATION = "llmkube.io/model-version"
APPLIED_SPEC_ANNOTATION = "llmkube.io/applied-spec"
RAY_CLUSTER_LABEL = "ray.io/cluster"
"""KubeRay labels every pod of a RayCluster with the cluster's name."""
RAY_SERVE_LABEL = "ray.io/serve"
"""KubeRay's mark of a pod whose Serve proxy takes traffic ("true")."""
# KubeRay appends suffixes to RayJob names for its RayCluster and pods (MaxRayJobNameLength).
MAX_RAYJOB_NAME = 47


def _bounded(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-.')}-{digest}"


def label_value(value: str) -> str:
    """A label value (at most 63 characters; longer names are shortened with a hash)."""
    return _bounded(value, 63)


def rayjob_name(job_name: str) -> str:
    return _bounded(job_name, MAX_RAYJOB_NAME)


def rayservice_name(deployment_name: str) -> str:
    # KubeRay's MaxRayServiceNameLength is the same as for RayJobs.
    return _bounded(deployment_name, MAX_RAYJOB_NAME)


def run_configmap_name(job_name: str) -> str:
    return f"{rayjob_name(job_name)}-run"


def tuning_rayjob_name(job_name: str) -> str:
    """A search's RayJob: suffixed, as a training job of the same name may exist."""
    return rayjob_name(f"{job_name}-tune")


def tuning_configmap_name(job_name: str) -> str:
    return f"{tuning_rayjob_name(job_name)}-run"


def standard_labels(instance: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "llmkube",
        "app.kubernetes.io/instance": label_value(instance),
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "llmkube",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_reference(api_version: str, kind: str, meta: ObjectMeta) -> dict[str, object]:
    # Children are garbage-collected with their owner; no finalizer ever blocks deletion.
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    owner_kind: str, owner: ObjectMeta, name: str, labels: dict[str, str]
) -> dict[str, object]:
    """Metadata of an object the operator creates for `owner`, in the owner's namespace."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(GROUP_VERSION, owner_kind, owner)],
    }
