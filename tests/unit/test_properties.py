"""Random and mutated manifests: valid ones round-trip and satisfy the CRD schema, invalid ones
raise ValidationError with readable lines, and nothing ever raises anything else."""

import jsonschema
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from llmkube.api import LLMDeployment, LLMTrainingJob
from llmkube.api.crd import deployment_crd, training_job_crd
from llmkube.api.errors import describe
from tests.manifest_fuzz import KEYS, VALUE, Json, example, mutate


def check(model: type[BaseModel], schema: dict[str, Json], doc: Json) -> None:
    try:
        resource = model.model_validate(doc)
    except ValidationError as error:
        event("invalid")
        lines = describe(error)
        assert lines
        assert all(isinstance(line, str) and ": " in line for line in lines)
        return
    event("valid")
    wire = resource.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert model.model_validate(wire) == resource
    # Whatever the operator accepts, the apiserver's schema accepts too.
    jsonschema.Draft4Validator(schema).validate(wire)


TRAINING_SCHEMA = training_job_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
DEPLOYMENT_SCHEMA = deployment_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.data())
def test_mutated_training_jobs(data: st.DataObject) -> None:
    check(LLMTrainingJob, TRAINING_SCHEMA, mutate(example("training-job.yaml"), data))


@SETTINGS
@given(st.data())
def test_mutated_deployments(data: st.DataObject) -> None:
    check(LLMDeployment, DEPLOYMENT_SCHEMA, mutate(example("deployment.yaml"), data))


@SETTINGS
@given(VALUE)
def test_arbitrary_documents(doc: Json) -> None:
    check(LLMTrainingJob, TRAINING_SCHEMA, doc)
    check(LLMDeployment, DEPLOYMENT_SCHEMA, doc)


@SETTINGS
@given(st.dictionaries(KEYS, VALUE, max_size=5))
def test_arbitrary_specs(spec: dict[str, Json]) -> None:
    for kind, model, schema in (
        ("LLMTrainingJob", LLMTrainingJob, TRAINING_SCHEMA),
        ("LLMDeployment", LLMDeployment, DEPLOYMENT_SCHEMA),
    ):
        doc = {"apiVersion": "llmkube.io/v1alpha1", "kind": kind, "metadata": {"name": "x"}}
        check(model, schema, {**doc, "spec": spec})
