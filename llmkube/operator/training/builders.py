"""Pure builders: a validated LLMTrainingJob -> the ConfigMap and KubeRay RayJob that run it
(`ray_job` builds a search's RayJob too)."""

import json
from dataclasses import dataclass
from typing import Any

from llmkube.api import LLMTrainingJob, LLMTrainingJobSpec
from llmkube.api.runconfig import TrainingRunConfig, scaling_config
from llmkube.operator.kueue import kueue_labels
from llmkube.operator.naming import (
    APPLIED_SPEC_ANNOTATION,
    TRAINING_JOB_LABEL,
    child_metadata,
    label_value,
    rayjob_name,
    run_configmap_name,
    standard_labels,
)
from llmkube.operator.network_policy import build_network_policy
from llmkube.operator.pods import locked_down, scheduling, storage_env
from llmkube.operator.pods import resources as pod_resources
from llmkube.operator.settings import OperatorSettings

RUN_CONFIG_DIR = "/etc/llmkube"
RUN_CONFIG_FILE = "run.json"
ENTRYPOINT = f"python -m llmkube.runtime.train --config {RUN_CONFIG_DIR}/{RUN_CONFIG_FILE}"
# The finished Ray cluster lingers this long so its logs can still be read.
FINISHED_CLUSTER_TTL_SECONDS = 300
METRICS_PORT = 8080


def _labels(job: LLMTrainingJob) -> dict[str, str]:
    return {
        **standard_labels(job.metadata.name, "training"),
        TRAINING_JOB_LABEL: label_value(job.metadata.name),
    }


def _metadata(job: LLMTrainingJob, name: str) -> dict[str, Any]:
    return child_metadata("LLMTrainingJob", job.metadata, name, _labels(job))


def applied_spec(job: LLMTrainingJob) -> str:
    """The spec a RayJob was built from, minus `suspend` (the one field that may change later)."""
    return json.dumps(job.spec.to_wire() | {"suspend": None}, sort_keys=True, separators=(",", ":"))


def build_training_network_policy(
    job: LLMTrainingJob, settings: OperatorSettings
) -> dict[str, Any]:
    name = job.metadata.name
    return build_network_policy(
        # Named by kind: a training job and a deployment may share a name.
        _metadata(job, f"{rayjob_name(name)}-training"),
        {TRAINING_JOB_LABEL: label_value(name)},
        metrics_port=METRICS_PORT,
        serving_port=None,
        settings=settings,
    )


def build_run_configmap(job: LLMTrainingJob, run_config: TrainingRunConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, run_configmap_name(job.metadata.name)),
        "data": {RUN_CONFIG_FILE: run_config.model_dump_json(by_alias=True, indent=2)},
    }


def _container(
    name: str, image: str, resources: dict[str, Any], env: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "resources": resources,
        "env": env,
        "volumeMounts": [{"name": "run-config", "mountPath": RUN_CONFIG_DIR, "readOnly": True}],
    }


def build_rayjob(job: LLMTrainingJob, *, default_image: str) -> dict[str, Any]:
    spec = job.spec
    return ray_job(
        RayJobPlan(
            metadata=_metadata(job, rayjob_name(job.metadata.name)),
            pod_labels=_labels(job),
            entrypoint=ENTRYPOINT,
            configmap=run_configmap_name(job.metadata.name),
            template=spec,
            worker_groups=1,
            image=spec.image or default_image,
            applied_spec=applied_spec(job),
            suspend=spec.suspend or spec.scheduling.queue_name is not None,
        )
    )


@dataclass(frozen=True)
class RayJobPlan:
    """What a RayJob runs, for a training job or a search (whose trials each take the
    template's worker group)."""

    metadata: dict[str, Any]
    pod_labels: dict[str, str]
    entrypoint: str
    configmap: str
    """The ConfigMap holding the run config, mounted at RUN_CONFIG_DIR."""
    template: LLMTrainingJobSpec
    """Resources, storage, scheduling, retries and deadline of the training."""
    worker_groups: int
    """How many of the template's worker groups run at once (a search's trials.parallel)."""
    image: str
    applied_spec: str
    suspend: bool
    """Kueue creates queued jobs suspended and unsuspends them on admission."""


def ray_job(plan: RayJobPlan) -> dict[str, Any]:
    spec = plan.template
    resources = spec.resources
    image = plan.image
    env = [
        *storage_env(spec.storage),
        {"name": "LLMKUBE_JOB_NAME", "value": str(plan.metadata["name"])},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    volumes = [{"name": "run-config", "configMap": {"name": plan.configmap}}]

    # The same numbers Ray Train's ScalingConfig gets from the run config.
    scaling = scaling_config(resources)
    head_resources = pod_resources(resources.head.cpus, resources.head.memory, 0)
    worker_resources = pod_resources(
        scaling.cpus_per_worker, resources.memory_per_worker, scaling.gpus_per_worker
    )
    workers = scaling.workers * plan.worker_groups

    metadata = plan.metadata
    metadata["labels"] |= kueue_labels(spec.scheduling)
    metadata["annotations"] = {APPLIED_SPEC_ANNOTATION: plan.applied_spec}
    rayjob: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": metadata,
        "spec": {
            "entrypoint": plan.entrypoint,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": FINISHED_CLUSTER_TTL_SECONDS,
            "backoffLimit": spec.backoff_limit,
            # KubeRay runs `ray job submit` in this pod (it fills in the command): ours carries
            # the job's labels, so the NetworkPolicy lets it reach the dashboard, and is locked
            # down like the cluster's own pods. No credentials: it only submits.
            "submitterPodTemplate": {
                "metadata": {"labels": plan.pod_labels},
                "spec": locked_down(
                    [
                        {
                            "name": "ray-job-submitter",
                            "image": image,
                            "resources": pod_resources(1, "1Gi", 0),
                        }
                    ],
                    restartPolicy="Never",
                ),
            },
            "suspend": plan.suspend,
            "rayClusterSpec": {
                "headGroupSpec": {
                    # The head schedules no training work: all of it goes to the GPU workers.
                    "rayStartParams": {"num-cpus": "0", "num-gpus": "0"},
                    "template": {
                        "metadata": {"labels": plan.pod_labels},
                        "spec": locked_down(
                            [
                                {
                                    **_container("ray-head", image, head_resources, env),
                                    "ports": [
                                        {"name": "gcs", "containerPort": 6379},
                                        {"name": "dashboard", "containerPort": 8265},
                                        {"name": "client", "containerPort": 10001},
                                        {"name": "metrics", "containerPort": METRICS_PORT},
                                    ],
                                }
                            ],
                            volumes=volumes,
                        ),
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "workers",
                        "replicas": workers,
                        "minReplicas": workers,
                        "maxReplicas": workers,
                        "rayStartParams": {},
                        "template": {
                            "metadata": {"labels": plan.pod_labels},
                            "spec": locked_down(
                                [_container("ray-worker", image, worker_resources, env)],
                                volumes=volumes,
                                **scheduling(resources.node_pool),
                            ),
                        },
                    }
                ],
            },
        },
    }
    if spec.active_deadline_seconds is not None:
        rayjob["spec"]["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return rayjob
