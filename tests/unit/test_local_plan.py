"""Fitting manifests to this machine for `llmkube run`."""

from pathlib import Path

import pytest

from llmkube.api import LLMDeployment, LLMTrainingJob
from llmkube.api.deployment import AdapterSource, TrainingJobRef
from llmkube.cli import manifests
from llmkube.local.plan import PlanError, data_dir, plan

FROM_SCRATCH = Path(__file__).parents[2] / "examples" / "from-scratch"
QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart"


def from_scratch() -> tuple[list[LLMTrainingJob], list[LLMDeployment]]:
    documents = manifests.load([FROM_SCRATCH], {"LLMKUBE_DATA_DIR": "/data"})
    assert not [d.problems for d in documents if d.problems]
    jobs = [d.resource for d in documents if isinstance(d.resource, LLMTrainingJob)]
    deployments = [d.resource for d in documents if isinstance(d.resource, LLMDeployment)]
    return jobs, deployments


def test_the_from_scratch_example_runs_as_written_on_two_cpus() -> None:
    jobs, deployments = from_scratch()
    local = plan(jobs, deployments, cpus=2, has_gpu=False)
    assert local.warnings == []
    (training,) = local.training
    assert training.dataset.source == "file:///data/datasets/pydoc/"
    assert local.serving is not None
    assert local.serving.model_uri == "file:///data/models/pydoc/model"


def test_gpus_and_cpus_are_fitted_to_the_machine_with_warnings() -> None:
    jobs, deployments = from_scratch()
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
    _, deployments = from_scratch()
    with pytest.raises(PlanError, match="LLMTrainingJob pydoc as its model, which is not among"):
        plan([], deployments, cpus=2, has_gpu=False)
    with pytest.raises(PlanError, match="one LLMDeployment at a time"):
        plan([], deployments * 2, cpus=2, has_gpu=False)


def test_data_dir_defaults() -> None:
    assert data_dir({"LLMKUBE_DATA_DIR": "/x/y"}) == Path("/x/y")
    assert data_dir({"XDG_DATA_HOME": "/xdg"}) == Path("/xdg/llmkube")


def test_the_quickstart_fine_tunes_and_serves_the_adapter_as_written() -> None:
    documents = manifests.load([QUICKSTART], {"LLMKUBE_DATA_DIR": "/data"})
    jobs = [d.resource for d in documents if isinstance(d.resource, LLMTrainingJob)]
    deployments = [d.resource for d in documents if isinstance(d.resource, LLMDeployment)]
    local = plan(jobs, deployments, cpus=2, has_gpu=False)
    assert local.warnings == []
    # llmkube run serves without a key on 127.0.0.1 only, and says so (a cluster refuses it).
    assert local.notes == [
        "python-chat is served without authentication, on 127.0.0.1 only; set "
        "serving.apiKeySecret (and export LLMKUBE_API_KEY) to require a key, as a cluster does"
    ]
    (training,) = local.training
    assert training.pretrained is not None
    assert training.pretrained.uri == "file:///data/models/smollm2-135m-instruct"
    assert training.pretrained.method == "lora"
    assert local.serving is not None
    assert local.serving.model_uri == "file:///data/models/python-chat/model"


def test_adapters_resolve_to_their_jobs_outputs_or_name_the_missing_job() -> None:
    jobs, deployments = from_scratch()
    deployment = deployments[0].model_copy(deep=True)
    deployment.spec.model.adapters = [
        AdapterSource(name="from-job", training_job_ref=TrainingJobRef(name="pydoc")),
        AdapterSource(name="from-uri", uri="s3://adapters/a/model"),
    ]
    local = plan(jobs, [deployment], cpus=2, has_gpu=False)
    assert local.serving is not None
    assert {a.name: a.uri for a in local.serving.adapters} == {
        "from-job": "file:///data/models/pydoc/model",
        "from-uri": "s3://adapters/a/model",
    }
    deployment.spec.model.adapters[0].training_job_ref = TrainingJobRef(name="elsewhere")
    with pytest.raises(PlanError, match="LLMTrainingJob elsewhere as its adapter from-job"):
        plan(jobs, [deployment], cpus=2, has_gpu=False)
