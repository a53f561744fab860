"""LLMTuningJob: search spaces checked against the template, trials' specs and run configs."""

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llmkube.api import LLMDeployment, LLMTuningJob
from llmkube.api.errors import describe
from llmkube.api.runconfig import trial_run_config, tuning_run_config
from llmkube.api.search_paths import PathError, leaf_field
from llmkube.api.training import LLMTrainingJobSpec
from llmkube.api.tuning import reported_metrics, with_values
from llmkube.cli import manifests
from llmkube.local.plan import PlanError, plan

TUNING = Path(__file__).parents[2] / "examples" / "tuning"

FROM_SCRATCH = {
    "model": {"preset": "tiny"},
    "tokenizer": {"type": "byte"},
    "dataset": {"source": "s3://data/corpus/"},
    "training": {"maxSteps": 40, "learningRate": 0.003},
    "evaluation": {"interval": 10},
    "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 1},
    "output": "s3://runs/sweep/",
}
PRETRAINED = {
    "model": {"pretrained": {"uri": "s3://models/smollm2"}},
    "dataset": {"source": "s3://data/chat/", "format": "chat"},
    "training": {"maxSteps": 20},
    "output": "s3://runs/chat-sweep",
}


def tuning_job(template: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTuningJob",
        "metadata": {"name": "sweep", "namespace": "team"},
        "spec": {
            "template": copy.deepcopy(template or FROM_SCRATCH),
            "searchSpace": {
                "training.learningRate": {"type": "loguniform", "min": 1e-4, "max": 1e-2}
            },
            **spec,
        },
    }


def problems(manifest: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as error:
        LLMTuningJob.model_validate(manifest)
    return "\n".join(describe(error.value))


@pytest.mark.parametrize(
    ("space", "extra", "expected"),
    [
        (
            {"training.learningrate": {"type": "uniform", "min": 0.1, "max": 0.2}},
            {},
            "spec.searchSpace: training.learningrate: 'learningrate' is not a field of "
            "training; its fields are batchSize,",
        ),
        (
            {"trainer.learningRate": {"type": "uniform", "min": 0.1, "max": 0.2}},
            {},
            "'trainer' is not a field of the template",
        ),
        (
            {"training.learningRate": {"type": "uniform", "min": -0.1, "max": 0.2}},
            {},
            "spec.searchSpace: training.learningRate: the template refuses -0.1 "
            "(training.learningRate: Input should be greater than 0)",
        ),
        (
            {"training.batchSize": {"type": "uniform", "min": 1, "max": 4}},
            {},
            "training.batchSize takes whole numbers; use type int or choice, not uniform",
        ),
        (
            {"training": {"type": "choice", "values": [1]}},
            {},
            "training is an object; name one of its fields",
        ),
        (
            {"training.maxSteps.x": {"type": "choice", "values": [1]}},
            {},
            "training.maxSteps holds a value, not fields",
        ),
        (
            {"finetune.lora.rank": {"type": "int", "min": 4, "max": 8}},
            {},
            "the template refuses 4 (template: finetune applies only to model.pretrained",
        ),
        (
            {"training.schedule": {"type": "choice", "values": ["cosine", "step"]}},
            {},
            "the template refuses 'step'",
        ),
        (
            {"training.learningRate": {"type": "uniform", "min": 0.1, "max": 0.2}},
            {"algorithm": "grid"},
            "searchSpace.training.learningRate: grid search takes type choice or int; uniform "
            "is a continuous range",
        ),
        (
            {"training.batchSize": {"type": "int", "min": 1, "max": 20}},
            {"algorithm": "grid"},
            "the grid has 20 combinations, more than trials.max (8)",
        ),
        (
            {"training.batchSize": {"type": "choice", "values": [1, 2]}},
            {"trials": {"max": 2, "parallel": 3}},
            "spec.trials: trials.parallel is more than trials.max; lower trials.parallel or "
            "raise max",
        ),
        (
            {"training.batchSize": {"type": "choice", "values": [1, 2]}},
            {"objective": {"metric": "bleu"}},
            "spec.objective.metric: Input should be 'eval_loss', 'eval_perplexity' or "
            "'eval_accuracy'",
        ),
        (
            {"training.learningRate": {"type": "loguniform", "min": 0, "max": 0.1}},
            {},
            "type loguniform needs min above 0",
        ),
        (
            {"training.learningRate": {"type": "uniform", "values": [0.1]}},
            {},
            "type uniform takes min and max, not values",
        ),
        (
            {"training.batchSize": {"type": "int", "min": 1.5, "max": 4}},
            {},
            "type int takes whole numbers as min and max",
        ),
    ],
)
def test_bad_search_spaces_are_refused_naming_the_path(
    space: dict[str, Any], extra: dict[str, Any], expected: str
) -> None:
    manifest = tuning_job(**extra)
    manifest["spec"]["searchSpace"] = space
    assert expected in problems(manifest)


def test_paths_name_fields_by_their_wire_names_through_optional_objects() -> None:
    assert leaf_field(LLMTrainingJobSpec, "finetune.lora.rank").annotation is int
    assert leaf_field(LLMTrainingJobSpec, "model.overrides.dropout") is not None
    with pytest.raises(PathError, match="its fields are"):
        leaf_field(LLMTrainingJobSpec, "finetune.lora.rnk")


def test_values_are_set_in_the_template_creating_the_objects_on_the_way() -> None:
    job = LLMTuningJob.model_validate(
        tuning_job(
            PRETRAINED,
            searchSpace={"finetune.lora.rank": {"type": "choice", "values": [4, 16]}},
        )
    )
    wire = with_values(job.spec.template, {"finetune.lora.rank": 16, "training.batchSize": 2})
    assert wire["finetune"] == {"lora": {"rank": 16}}
    assert wire["training"]["batchSize"] == 2
    assert "finetune" not in job.spec.template.to_wire(), "the template itself is unchanged"


def test_a_trial_runs_the_template_with_its_values_under_the_searchs_output() -> None:
    job = LLMTuningJob.model_validate(
        tuning_job(
            PRETRAINED | {"export": {"onnx": {"enabled": True}}},
            searchSpace={
                "finetune.lora.rank": {"type": "choice", "values": [4, 16]},
                "training.learningRate": {"type": "loguniform", "min": 1e-4, "max": 1e-2},
            },
        )
    )
    config = tuning_run_config(job, default_endpoint="minio:9000")
    trial = trial_run_config(
        config, "ab12c-00003", {"finetune.lora.rank": 16, "training.learningRate": 0.002}
    )
    assert trial.output == "s3://runs/chat-sweep/trials/ab12c-00003"
    assert trial.dataset.cache == "s3://runs/chat-sweep/cache", "one cache for every trial"
    assert trial.checkpoint.keep == 1
    assert trial.pretrained is not None
    assert trial.pretrained.lora.rank == 16
    assert trial.pretrained.lora.alpha == 32.0, "resolved from the trial's own rank"
    assert trial.training.learning_rate == 0.002
    assert trial.storage.endpoint == "minio:9000"
    assert (trial.job.name, trial.job.namespace) == ("sweep-ab12c-00003", "team")
    assert config.template.export.onnx.enabled, "the template asks for an export"
    assert not trial.export.onnx.enabled, "only the published winner is worth exporting"


def test_defaults_resolve_once_in_the_run_config() -> None:
    job = LLMTuningJob.model_validate(
        tuning_job(objective={"metric": "eval_accuracy"}, earlyStopping={"type": "asha"})
    )
    config = tuning_run_config(job)
    assert config.objective.mode == "max"
    assert config.early_stopping is not None
    assert config.early_stopping.grace_period == 10, "the template's evaluation interval"
    assert config.output == "s3://runs/sweep"
    loss = tuning_run_config(LLMTuningJob.model_validate(tuning_job()))
    assert loss.objective.mode == "min"
    assert loss.early_stopping is None


def test_a_grid_lists_every_combination_once() -> None:
    job = LLMTuningJob.model_validate(
        tuning_job(
            algorithm="grid",
            searchSpace={
                "training.batchSize": {"type": "int", "min": 2, "max": 3},
                "training.schedule": {"type": "choice", "values": ["cosine", "constant"]},
            },
            trials={"max": 4},
        )
    )
    assert job.spec.grid_points() == [
        {"training.batchSize": 2, "training.schedule": "cosine"},
        {"training.batchSize": 2, "training.schedule": "constant"},
        {"training.batchSize": 3, "training.schedule": "cosine"},
        {"training.batchSize": 3, "training.schedule": "constant"},
    ]


def test_reports_carry_the_objective_metrics_by_their_names() -> None:
    evaluation = {"eval_loss": 2.0, "perplexity": 7.39, "accuracy": 0.4, "samples": []}
    assert reported_metrics(30, 40, evaluation) == {
        "step": 30,
        "total_steps": 40,
        "eval_loss": 2.0,
        "eval_perplexity": 7.39,
        "eval_accuracy": 0.4,
    }
    assert reported_metrics(5, 40, None) == {"step": 5, "total_steps": 40}


def test_the_tuning_example_runs_on_two_cpus_and_its_deployment_serves_the_best_model() -> None:
    documents = manifests.load([TUNING], {"LLMKUBE_DATA_DIR": "/data"})
    assert not [d.problems for d in documents if d.problems]
    searches = [d.resource for d in documents if isinstance(d.resource, LLMTuningJob)]
    deployments = [d.resource for d in documents if isinstance(d.resource, LLMDeployment)]
    local = plan([], deployments, cpus=2, has_gpu=False, tunings=searches)
    assert local.warnings == []
    (search,) = local.tuning
    assert search.output == "file:///data/models/python-chat-tuned"
    assert local.serving is not None
    assert local.serving.model_uri == "file:///data/models/python-chat-tuned/model"
    with pytest.raises(PlanError, match="LLMTuningJob python-chat-tuned as its model"):
        plan([], deployments, cpus=2, has_gpu=False)


def test_trials_at_once_are_fitted_to_the_machine() -> None:
    job = LLMTuningJob.model_validate(tuning_job(trials={"max": 6, "parallel": 4}))
    local = plan([], [], cpus=2, has_gpu=False, max_steps=12, tunings=[job])
    (search,) = local.tuning
    assert search.trials.parallel == 2
    assert search.template.training.max_steps == 12
    assert "4 trials at once do not fit this machine's 2 CPUs; running 2 at a time" in "\n".join(
        local.warnings
    )
