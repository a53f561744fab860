"""Pure builders: a validated LLMTuningJob -> the ConfigMap and RayJob that run its search. The
RayJob is a training job's, with the search's entrypoint and one worker group per trial that
runs at once."""

import json
from typing import Any

from llmkube.api import LLMTuningJob
from llmkube.api.runconfig import TuningRunConfig
from llmkube.api.tuning import TUNING_CONFIG_FILE
from llmkube.operator.naming import (
    TUNING_JOB_LABEL,
    child_metadata,
    label_value,
    standard_labels,
    tuning_configmap_name,
    tuning_rayjob_name,
)
from llmkube.operator.network_policy import build_network_policy
from llmkube.operator.settings import OperatorSettings
from llmkube.operator.training.builders import METRICS_PORT, RUN_CONFIG_DIR, RayJobPlan, ray_job

ENTRYPOINT = f"python -m llmkube.runtime.tune --config {RUN_CONFIG_DIR}/{TUNING_CONFIG_FILE}"


def _labels(job: LLMTuningJob) -> dict[str, str]:
    return {
        **standard_labels(job.metadata.name, "tuning"),
        TUNING_JOB_LABEL: label_value(job.metadata.name),
    }


def _metadata(job: LLMTuningJob, name: str) -> dict[str, Any]:
    return child_metadata("LLMTuningJob", job.metadata, name, _labels(job))


def applied_spec(job: LLMTuningJob) -> str:
    """The spec the RayJob was built from (none of it may change afterwards)."""
    return json.dumps(job.spec.to_wire(), sort_keys=True, separators=(",", ":"))


def build_tuning_configmap(job: LLMTuningJob, run_config: TuningRunConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(job, tuning_configmap_name(job.metadata.name)),
        "data": {TUNING_CONFIG_FILE: run_config.model_dump_json(by_alias=True, indent=2)},
    }


def build_tuning_rayjob(job: LLMTuningJob, *, default_image: str) -> dict[str, Any]:
    template = job.spec.template
    return ray_job(
        RayJobPlan(
            metadata=_metadata(job, tuning_rayjob_name(job.metadata.name)),
            pod_labels=_labels(job),
            entrypoint=ENTRYPOINT,
            configmap=tuning_configmap_name(job.metadata.name),
            template=template,
            worker_groups=job.spec.trials.parallel,
            image=template.image or default_image,
            applied_spec=applied_spec(job),
            suspend=template.scheduling.queue_name is not None,
        )
    )


def build_tuning_network_policy(job: LLMTuningJob, settings: OperatorSettings) -> dict[str, Any]:
    return build_network_policy(
        _metadata(job, f"{tuning_rayjob_name(job.metadata.name)}-tuning"),
        {TUNING_JOB_LABEL: label_value(job.metadata.name)},
        metrics_port=METRICS_PORT,
        serving_port=None,
        settings=settings,
    )
