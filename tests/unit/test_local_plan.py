"""Fitting manifests to this machine for `llmkube run`."""

from pathlib import Path

import pytest

from llmkube.api import LLMDeployment, LLMTrainingJob
from llmkube.cli import manifests
from llmkube.local.plan import PlanError, data_dir, plan

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart"


def quickstart() -> tuple[list[LLMTrainingJob], list[LLMDeployment]]:
    documents = manifests.load([QUICKSTART], {"LLMKUBE_DATA_DIR": "/data"})
    assert not [d.problems for d in documents if d.problems]
    jobs = [d.resource for d in documents if isinstance(d.resource, LLMTrainingJob)]
    deployments = [d.resource for d in documents if isinstance(d.resource, LLMDeployment)]
    return jobs, deployments


def test_the_quickstart_runs_as_written_on_two_cpus() -> None:
    jobs, deployments = quickstart()
    local = plan(jobs, deployments, cpus=2, has_gpu=False)
    assert local.warnings == []
    (training,) = local.training
    assert training.dataset.source == "file:///data/datasets/pydoc/"
    assert local.serving is not None
    assert local.serving.model_uri == "file:///data/models/pydoc/model"


def test_gpus_and_cpus_are_fitted_to_the_machine_with_warnings() -> None:
    jobs, deployments = quickstart()
    job = jobs[0].model_copy(deep=True)
    job.spec.resources.gpus_per_worker = 2
    job.spec.resources.workers = 4
    job.spec.resources.cpus_per_worker = 8
    deployment = deployments[0].model_copy(deep=True)
    deployment.spec.resources.gpus_per_replica = 1
    deployment.spec.replicas = 3
    local = plan([job], [deployment], cpus=2, has_gpu=False, max_steps=20)
    scaling = local.training[0].scaling
    assert (scaling.workers, scaling.cpus_per_worker, scaling.gpus_per_worker) == (2, 1, 0)
    assert local.training[0].training.max_steps == 20
    assert local.training[0].training.warmup_steps == 2
    assert local.serving is not None
    assert (local.serving.replicas, local.serving.gpus_per_replica) == (1, 0)
    text = "\n".join(local.warnings)
    assert "no GPU; training on CPUs instead" in text
    assert "no GPU; serving on CPUs instead" in text
    assert "using 2 x 1" in text
    assert "cut to 20 steps" in text


def test_a_deployment_needs_its_training_job() -> None:
    _, deployments = quickstart()
    with pytest.raises(PlanError, match="LLMTrainingJob pydoc as its model, which is not among"):
        plan([], deployments, cpus=2, has_gpu=False)
    with pytest.raises(PlanError, match="one LLMDeployment at a time"):
        plan([], deployments * 2, cpus=2, has_gpu=False)


def test_data_dir_defaults() -> None:
    assert data_dir({"LLMKUBE_DATA_DIR": "/x/y"}) == Path("/x/y")
    assert data_dir({"XDG_DATA_HOME": "/xdg"}) == Path("/xdg/llmkube")
