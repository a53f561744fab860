"""From validated manifests to the run configs a local run executes, fitted to this machine.
Pure: the caller supplies the machine's CPU count and whether it has a GPU."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from llmkube.api import LLMDeployment, LLMTrainingJob, LLMTuningJob
from llmkube.api.artifacts import MODEL_DIR
from llmkube.api.common import ObjectMeta
from llmkube.api.deployment import TrainingJobRef
from llmkube.api.runconfig import (
    ServeRunConfig,
    TrainingRunConfig,
    TuningRunConfig,
    serve_run_config,
    training_run_config,
    tuning_run_config,
)
from llmkube.storage.uri import join

DATA_DIR_ENV = "LLMKUBE_DATA_DIR"
MAX_STEPS_ENV = "LLMKUBE_MAX_STEPS"


class PlanError(Exception):
    """The manifests cannot run locally; the message says what to change."""


def data_dir(environ: dict[str, str] | None = None) -> Path:
    """Where local runs keep data, outputs and logs: $LLMKUBE_DATA_DIR, else
    $XDG_DATA_HOME/llmkube, else ~/.local/share/llmkube."""
    env = dict(os.environ) if environ is None else environ
    if env.get(DATA_DIR_ENV):
        return Path(env[DATA_DIR_ENV]).expanduser().resolve()
    base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return (base / "llmkube").resolve()


@dataclass
class LocalPlan:
    training: list[TrainingRunConfig] = field(default_factory=list)
    tuning: list[TuningRunConfig] = field(default_factory=list)
    serving: ServeRunConfig | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What differs from a cluster on purpose (shown, but nothing to fix)."""


def fit_training(
    config: TrainingRunConfig, *, cpus: int, has_gpu: bool, max_steps: int | None
) -> tuple[TrainingRunConfig, list[str]]:
    warnings = []
    scaling = config.scaling
    gpus = scaling.gpus_per_worker
    if gpus and not has_gpu:
        warnings.append(
            f"{config.job.name}: resources.gpusPerWorker is {gpus} but this machine has no GPU; "
            "training on CPUs instead"
        )
        gpus = 0
    workers = min(scaling.workers, cpus)
    per_worker = max(1, min(scaling.cpus_per_worker, cpus // workers))
    if (workers, per_worker) != (scaling.workers, scaling.cpus_per_worker):
        warnings.append(
            f"{config.job.name}: {scaling.workers} worker(s) x {scaling.cpus_per_worker} CPUs do "
            f"not fit this machine's {cpus} CPUs; using {workers} x {per_worker}"
        )
    updates: dict[str, object] = {
        "scaling": scaling.model_copy(
            update={"workers": workers, "cpus_per_worker": per_worker, "gpus_per_worker": gpus}
        )
    }
    if max_steps is not None:
        updates["training"] = config.training.cut_to(max_steps)
        warnings.append(f"{config.job.name}: training cut to {max_steps} steps (--max-steps)")
    return config.model_copy(update=updates), warnings


def fit_tuning(
    config: TuningRunConfig, *, cpus: int, has_gpu: bool, max_steps: int | None
) -> tuple[TuningRunConfig, list[str]]:
    """Each trial fitted as a training job is, then as many at once as this machine holds."""
    template = config.template
    name = config.job.name
    trial, warnings = fit_training(
        training_run_config(LLMTrainingJob(metadata=ObjectMeta(name=name), spec=template)),
        cpus=cpus,
        has_gpu=has_gpu,
        max_steps=max_steps,
    )
    scaling = trial.scaling
    resources = template.resources.model_copy(
        update={
            "workers": scaling.workers,
            "cpus_per_worker": scaling.cpus_per_worker,
            "gpus_per_worker": scaling.gpus_per_worker,
        }
    )
    updates: dict[str, object] = {"resources": resources}
    if max_steps is not None:
        updates["training"] = trial.training
    trials = config.trials
    fits = max(1, cpus // (scaling.workers * scaling.cpus_per_worker))
    if trials.parallel > fits:
        warnings.append(
            f"{name}: {trials.parallel} trials at once do not fit this machine's {cpus} CPUs; "
            f"running {fits} at a time"
        )
        trials = trials.model_copy(update={"parallel": fits})
    return config.model_copy(
        update={"template": template.model_copy(update=updates), "trials": trials}
    ), warnings


def fit_serving(
    config: ServeRunConfig, *, cpus: int, has_gpu: bool
) -> tuple[ServeRunConfig, list[str]]:
    warnings = []
    updates: dict[str, object] = {}
    if config.gpus_per_replica and not has_gpu:
        warnings.append(
            f"{config.deployment.name}: resources.gpusPerReplica is {config.gpus_per_replica} "
            "but this machine has no GPU; serving on CPUs instead"
        )
        updates["gpus_per_replica"] = 0
    replicas = max(1, min(config.replicas, cpus // max(1, min(config.cpus_per_replica, cpus))))
    per_replica = max(1, min(config.cpus_per_replica, cpus // replicas))
    if (replicas, per_replica) != (config.replicas, config.cpus_per_replica):
        warnings.append(
            f"{config.deployment.name}: {config.replicas} replica(s) x {config.cpus_per_replica} "
            f"CPUs do not fit this machine's {cpus} CPUs; using {replicas} x {per_replica}"
        )
        updates.update(replicas=replicas, cpus_per_replica=per_replica)
    return config.model_copy(update=updates), warnings


def _source_uri(
    deployment: LLMDeployment,
    job: TrainingJobRef | None,
    uri: str | None,
    outputs: dict[str, str],
    what: str,
) -> str:
    """The folder a model or adapter source names: a job's model/, or its uri."""
    if job is None:
        assert uri is not None  # validated: one of the two is set
        return uri
    if f"{job.kind}/{job.name}" not in outputs:
        raise PlanError(
            f"LLMDeployment {deployment.metadata.name} serves the output of {job.kind} "
            f"{job.name} as its {what}, which is not among the manifests given; add its "
            "manifest or set a uri"
        )
    return join(outputs[f"{job.kind}/{job.name}"], MODEL_DIR)


def plan(
    jobs: list[LLMTrainingJob],
    deployments: list[LLMDeployment],
    *,
    cpus: int,
    has_gpu: bool,
    max_steps: int | None = None,
    tunings: list[LLMTuningJob] | None = None,
) -> LocalPlan:
    result = LocalPlan()
    outputs: dict[str, str] = {}
    """kind/name → output of each job in the manifests."""
    for job in jobs:
        training, warnings = fit_training(
            training_run_config(job), cpus=cpus, has_gpu=has_gpu, max_steps=max_steps
        )
        result.training.append(training)
        result.warnings.extend(warnings)
        outputs[f"LLMTrainingJob/{job.metadata.name}"] = training.output
    for tuning_job in tunings or []:
        tuning, warnings = fit_tuning(
            tuning_run_config(tuning_job), cpus=cpus, has_gpu=has_gpu, max_steps=max_steps
        )
        result.tuning.append(tuning)
        result.warnings.extend(warnings)
        outputs[f"LLMTuningJob/{tuning_job.metadata.name}"] = tuning.output
    if len(deployments) > 1:
        names = ", ".join(d.metadata.name for d in deployments)
        raise PlanError(f"llmkube run serves one LLMDeployment at a time; found {names}")
    for deployment in deployments:
        model = deployment.spec.model
        model_uri = _source_uri(deployment, model.training_job_ref, model.uri, outputs, "model")
        adapter_uris = {
            adapter.name: _source_uri(
                deployment,
                adapter.training_job_ref,
                adapter.uri,
                outputs,
                f"adapter {adapter.name}",
            )
            for adapter in model.adapters
        }
        serving, warnings = fit_serving(
            serve_run_config(deployment, model_uri=model_uri, adapter_uris=adapter_uris),
            cpus=cpus,
            has_gpu=has_gpu,
        )
        result.serving = serving
        result.warnings.extend(warnings)
        if not deployment.spec.serving.allow_unauthenticated and serving.api_key_env is None:
            result.notes.append(
                f"{deployment.metadata.name} is served without authentication, on 127.0.0.1 "
                "only; set serving.apiKeySecret (and export LLMKUBE_API_KEY) to require a key, "
                "as a cluster does"
            )
    return result
