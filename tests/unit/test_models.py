"""The API models: defaults, presets, cross-field rules and the messages users see."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from llmkube.api import LLMTrainingJob
from llmkube.api.errors import describe, field_path
from llmkube.api.presets import PRESETS
from llmkube.api.run_identity import output_identity
from llmkube.api.runconfig import TrainingRunConfig, training_run_config
from llmkube.cli import manifests
from tests.bad_manifests import BadManifest, corpus

EXAMPLES = Path(__file__).parents[2] / "examples"
# The quickstart names the local data folder as llmkube run does.
LOCAL = {"LLMKUBE_DATA_DIR": "/data"}


def minimal_job(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTrainingJob",
        "metadata": {"name": "job", "namespace": "team-a"},
        "spec": {
            "dataset": {"source": "s3://datasets/text/"},
            "training": {"maxSteps": 1000},
            "output": "s3://models/job/",
            **spec,
        },
    }


def example(kind: str) -> manifests.Resource:
    """The shakespeare example of a kind (examples/*.yaml, not the sub-folders)."""
    for doc in manifests.load(sorted(EXAMPLES.glob("*.yaml"))):
        if doc.kind == kind:
            assert doc.resource is not None, doc.problems
            return doc.resource
    raise AssertionError(f"no {kind} in examples/")


def test_examples_are_valid() -> None:
    documents = manifests.load([EXAMPLES], LOCAL)
    assert {doc.kind for doc in documents} == {
        "LLMTrainingJob",
        "LLMTuningJob",
        "LLMDeployment",
        "Secret",
        # examples/gitops/
        "Application",
        "GitRepository",
        "HelmRelease",
        "Kustomization",
    }
    assert all(not doc.problems for doc in documents)


def test_defaults_live_in_the_models() -> None:
    job = LLMTrainingJob.model_validate(minimal_job())
    config = training_run_config(job)
    assert config.model is not None
    assert config.tokenizer is not None
    assert config.model.d_model == PRESETS["small"].d_model
    assert config.tokenizer.resolved_vocab_size() == 8192
    assert job.spec.resources.workers == 1
    assert job.spec.resources.gpus_per_worker == 1
    assert job.spec.checkpoint.keep == 3
    assert job.spec.training.resolved_warmup_steps() == 100
    assert job.spec.training.resolved_min_learning_rate() == pytest.approx(3e-5)


def test_short_runs_get_a_short_warmup_instead_of_an_error() -> None:
    job = LLMTrainingJob.model_validate(minimal_job(training={"maxSteps": 50}))
    assert job.spec.training.resolved_warmup_steps() == 5


def test_preset_and_overrides_resolve_to_dimensions() -> None:
    job = LLMTrainingJob.model_validate(
        minimal_job(model={"preset": "tiny", "overrides": {"nLayer": 3, "contextLength": 64}})
    )
    dims = job.spec.model.dimensions()
    assert (dims.n_layer, dims.n_head, dims.d_model, dims.context_length) == (3, 2, 64, 64)


def test_continuing_from_a_base_model_may_not_change_its_shape() -> None:
    with pytest.raises(ValidationError, match=r"cannot change the shape of model.base"):
        LLMTrainingJob.model_validate(
            minimal_job(model={"base": "s3://models/old/model/", "overrides": {"nLayer": 4}})
        )


def test_wire_format_is_camel_case_and_round_trips() -> None:
    job = example("LLMTrainingJob")
    wire = job.to_wire()
    assert "maxSteps" in wire["spec"]["training"]
    assert "max_steps" not in json.dumps(wire)
    assert LLMTrainingJob.model_validate(wire) == job


def test_strings_are_not_numbers_as_for_the_apiserver() -> None:
    with pytest.raises(ValidationError, match="valid integer"):
        LLMTrainingJob.model_validate(minimal_job(training={"maxSteps": "100"}))


def test_run_config_is_resolved_and_carries_no_secrets() -> None:
    job = example("LLMTrainingJob")
    assert isinstance(job, LLMTrainingJob)
    config = training_run_config(job, default_endpoint="unused:9000")
    assert config.job.name == "shakespeare"
    assert config.model is not None
    assert (config.model.n_layer, config.model.d_model, config.model.context_length) == (
        6,
        384,
        512,
    )
    assert config.model.vocab_size == 8192
    assert config.dataset.cache == "s3://models/shakespeare/cache"
    assert config.output == "s3://models/shakespeare"
    assert config.training.warmup_steps == 200
    assert config.training.min_learning_rate == pytest.approx(6e-5)
    assert config.scaling.workers == 2
    assert config.max_failures == 3
    assert config.storage.endpoint == "minio.minio.svc.cluster.local:9000"
    assert config.storage.access_key_env == "AWS_ACCESS_KEY_ID"
    text = config.model_dump_json(by_alias=True)
    assert "minio-credentials" not in text
    assert TrainingRunConfig.model_validate_json(text) == config


def test_run_config_takes_the_default_endpoint_when_the_spec_has_none() -> None:
    job = LLMTrainingJob.model_validate(minimal_job())
    assert training_run_config(job, default_endpoint="minio:9000").storage.endpoint == "minio:9000"
    assert training_run_config(job).storage.endpoint is None


def test_an_export_is_carried_to_the_run_but_is_not_what_the_model_was_trained_with() -> None:
    plain = LLMTrainingJob.model_validate(minimal_job())
    exporting = LLMTrainingJob.model_validate(
        minimal_job(export={"onnx": {"enabled": True, "opset": 21, "dtype": "float16"}})
    )
    config = training_run_config(exporting)
    assert (config.export.onnx.opset, config.export.onnx.dtype) == (21, "float16")
    assert not training_run_config(plain).export.onnx.enabled
    # Adding an export to a finished job exports its published model, without training again.
    assert output_identity(config) == output_identity(training_run_config(plain))


def test_run_config_is_a_pure_function() -> None:
    job = example("LLMTrainingJob")
    assert isinstance(job, LLMTrainingJob)
    assert training_run_config(job) == training_run_config(job)
    assert job == example("LLMTrainingJob")


def test_field_paths_read_like_kubectl() -> None:
    assert field_path(("spec", "nodePool", "tolerations", 0, "effect")) == (
        "spec.nodePool.tolerations[0].effect"
    )


def test_every_problem_is_reported_not_just_the_first() -> None:
    bad = minimal_job(training={"maxSteps": -1}, resources={"workers": 0})
    with pytest.raises(ValidationError) as caught:
        LLMTrainingJob.model_validate(bad)
    lines = describe(caught.value)
    assert any(line.startswith("spec.training.maxSteps:") for line in lines)
    assert any(line.startswith("spec.resources.workers:") for line in lines)


@pytest.mark.parametrize("bad", corpus(), ids=str)
def test_bad_manifests_are_rejected_with_a_message_naming_the_field(bad: BadManifest) -> None:
    doc = manifests.parse(bad.document, source=bad.path.name)
    if bad.cluster_only:  # llmkube run accepts it; the operator's validation does not
        assert doc.resource is not None
        assert any(bad.llmkube_says in problem for problem in doc.cluster_problems), doc
    else:
        assert doc.resource is None
        assert any(bad.llmkube_says in problem for problem in doc.problems), doc.problems


# The rules the CRDs cannot check, so that only the operator (and `llmkube validate`) refuse
# them: comparing normalised URI prefixes needs string handling CEL does not offer. (Rules that
# need the cluster's state, such as whether a Secret or a model exists, are not spec rules.)
OPERATOR_SIDE_RULES = {
    "output-inside-dataset",
    "output-inside-dataset-by-slashes",
    # A search space is checked against the template's pydantic model: no CEL can.
    "search-unknown-path",
    "search-range-the-field-refuses",
    "search-grid-of-a-range",
}


def test_the_corpus_is_large_enough_and_mixed() -> None:
    manifests_ = corpus()
    assert len(manifests_) >= 12
    kinds = {m.document["kind"] for m in manifests_}
    assert kinds == {"LLMTrainingJob", "LLMTuningJob", "LLMDeployment"}
    assert sum(m.same_message for m in manifests_) >= 12


def test_only_the_listed_rules_are_left_to_the_operator() -> None:
    assert {str(m) for m in corpus() if m.apiserver_says is None} == OPERATOR_SIDE_RULES
