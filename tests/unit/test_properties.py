"""Random and mutated manifests: valid ones round-trip and satisfy the CRD schema, invalid ones
raise ValidationError with readable lines, and nothing ever raises anything else."""

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from llmkube.api import LLMDeployment, LLMTrainingJob
from llmkube.api.crd import deployment_crd, training_job_crd
from llmkube.api.errors import describe

EXAMPLES = Path(__file__).parents[2] / "examples"
Json = Any

# Values that are sometimes right, so mutations also produce valid specs, not only garbage.
PLAUSIBLE = st.sampled_from(
    [
        "s3://bucket/data/",
        "file:///tmp/x",
        "tiny",
        "gpt2-124m",
        "custom",
        "ttftP95",
        "bpe",
        "byte",
        "16Gi",
        "NoSchedule",
        "Exists",
        "NewCluster",
        "fp32",
        "cosine",
        "",
        "a-name",
    ]
)
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.integers(min_value=0, max_value=64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | PLAUSIBLE
)
KEYS = st.text(max_size=10) | st.sampled_from(
    ["maxSteps", "epochs", "uri", "trainingJobRef", "query", "target", "nHead", "dModel"]
)
VALUE = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def example(name: str) -> dict[str, Json]:
    loaded = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def node_paths(doc: Json, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, child in doc.items():
            found.extend(node_paths(child, (*prefix, key)))
    elif isinstance(doc, list):
        for index, child in enumerate(doc):
            found.extend(node_paths(child, (*prefix, index)))
    return found


def mutate(doc: dict[str, Json], data: st.DataObject) -> dict[str, Json]:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        path = data.draw(st.sampled_from([p for p in node_paths(doc) if p]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "delete", "add-sibling"]))
        if action == "replace":
            parent[path[-1]] = data.draw(LEAF if data.draw(st.booleans()) else VALUE)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(KEYS)] = data.draw(VALUE)
        else:
            parent.append(data.draw(VALUE))
    return doc


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
