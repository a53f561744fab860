"""The CRDs generated from the models: in sync with crds/, structural, and self-documenting."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmkube.api.crd import all_crds

CRD_DIR = Path(__file__).parents[2] / "crds"


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_checked_in_crds_match_the_models(name: str) -> None:
    checked_in = yaml.safe_load((CRD_DIR / name).read_text())
    assert checked_in == all_crds()[name], (
        f"crds/{name} is stale: regenerate with `llmkube crds -o crds`"
    )


def test_no_stray_files_in_crds() -> None:
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(all_crds())


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_schema_is_structural_and_every_field_is_described(name: str) -> None:
    for path, node in walk(schema_of(all_crds()[name])):
        # Only a value of any type (a search's choices) may leave its type open.
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title"} & node.keys(), path
        assert node.get("additionalProperties") is not False, path
        is_named_field = not path.endswith(("[]", "{}"))  # items/values share their field's text
        if path.startswith((".spec", ".status")) and is_named_field:
            assert node.get("description"), f"{path} has no description (kubectl explain)"


def test_training_job_crd_names_columns_and_subresources() -> None:
    crd = all_crds()["llmkube.io_llmtrainingjobs.yaml"]
    assert crd["metadata"]["name"] == "llmtrainingjobs.llmkube.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "LLMTrainingJob",
        ["ltj"],
        ["llmkube"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["PHASE", "PROGRESS", "LOSS", "FINETUNE", "WAITING", "AGE"]
    assert schema_of(crd)["required"] == ["metadata", "spec"]


def test_tuning_job_crd_names_columns_and_keeps_choices_of_any_type() -> None:
    crd = all_crds()["llmkube.io_llmtuningjobs.yaml"]
    assert crd["spec"]["names"]["shortNames"] == ["ltune"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["PHASE", "TRIALS", "BEST", "AGE"]
    spec = schema_of(crd)["properties"]["spec"]["properties"]
    space = spec["searchSpace"]
    assert (space["minProperties"], space["maxProperties"]) == (1, 32)
    assert space["additionalProperties"]["properties"]["values"]["items"] == {
        "description": "A number, string or boolean the field takes.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    training = all_crds()["llmkube.io_llmtrainingjobs.yaml"]
    assert spec["template"] == {
        **schema_of(training)["properties"]["spec"],
        "description": spec["template"]["description"],
    }, "the template is validated as an LLMTrainingJob's spec is"


def test_deployment_crd_has_the_scale_subresource() -> None:
    crd = all_crds()["llmkube.io_llmdeployments.yaml"]
    assert crd["spec"]["names"]["shortNames"] == ["llmd"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"]]
    assert columns == ["PHASE", "READY", "REPLICAS", "ENDPOINT", "WAITING", "AGE"]
    replicas = schema_of(crd)["properties"]["spec"]["properties"]["replicas"]
    assert (replicas["type"], replicas["minimum"], replicas["maximum"]) == ("integer", 0, 100)


def test_enums_bounds_and_defaults_reach_the_schema() -> None:
    spec = schema_of(all_crds()["llmkube.io_llmtrainingjobs.yaml"])["properties"]["spec"]
    preset = spec["properties"]["model"]["properties"]["preset"]
    assert preset["enum"] == ["tiny", "small", "gpt2-124m"]
    assert "small (~10M parameters, the default)" in preset["description"]
    lora = spec["properties"]["finetune"]["properties"]["lora"]["properties"]
    assert "Default: 8." in lora["rank"]["description"]
    training = spec["properties"]["training"]
    assert training["properties"]["maxSteps"]["minimum"] == 1
    lr = training["properties"]["learningRate"]
    assert (lr["minimum"], lr["exclusiveMinimum"]) == (0.0, True)
    assert (
        training["x-kubernetes-validations"][0]["rule"] == "has(self.maxSteps) != has(self.epochs)"
    )
    assert set(spec["required"]) == {"dataset", "training", "output"}
    affinity = spec["properties"]["resources"]["properties"]["nodePool"]["properties"]["affinity"]
    assert affinity["x-kubernetes-preserve-unknown-fields"] is True
