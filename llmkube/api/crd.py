"""CustomResourceDefinitions generated from the pydantic models, so the two cannot disagree.

Pydantic emits JSON Schema (2020-12, with $refs and anyOf-null for optionals); Kubernetes wants a
structural OpenAPI v3 schema (inlined, one type per node, no `additionalProperties: false`). The
translation is small and specific to the constructs the models use, so it is written here rather
than pulled in as a dependency; anything it does not know raises instead of passing through.
"""

import copy
import json
from typing import Any

from pydantic import BaseModel

from llmkube.api.base import API_GROUP, API_VERSION
from llmkube.api.contract import DEPLOYMENTS, TRAINING_JOBS, TUNING_JOBS
from llmkube.api.deployment import LLMDeployment
from llmkube.api.training import LLMTrainingJob
from llmkube.api.tuning import LLMTuningJob

JsonSchema = dict[str, Any]

# Keys copied as they are; every other key must be handled explicitly below.
_PASSTHROUGH = {
    "type",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minItems",
    "minProperties",
    "maxProperties",
    "maxItems",
    "required",
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
}
_DROPPED = {"title", "default", "$defs"}


class UnsupportedSchemaError(ValueError):
    """A model uses a construct the CRD translation does not handle."""


def structural_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural OpenAPI v3 schema of a model, as Kubernetes validates CRDs with it."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(schema, schema.get("$defs", {}), path=model.__name__)


def _convert(node: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        # A field's own description wins over the referenced class docstring.
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs, path)
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        if len(options) != 1:
            raise UnsupportedSchemaError(
                f"{path}: unions other than X | None cannot be a CRD field"
            )
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _convert({**options[0], **rest}, defs, path)

    out: JsonSchema = {}
    for key, value in node.items():
        if key in _PASSTHROUGH:
            out[key] = copy.deepcopy(value)
        elif key == "description":
            out[key] = " ".join(value.split())
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out.update(minimum=value, exclusiveMinimum=True)
        elif key == "exclusiveMaximum":
            out.update(maximum=value, exclusiveMaximum=True)
        elif key == "properties":
            out[key] = {
                name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}{{}}")
            # False: the apiserver prunes unknown fields, and kubectl's strict validation
            # reports them.
        elif key not in _DROPPED:
            raise UnsupportedSchemaError(f"{path}: schema key {key!r} has no CRD translation")

    if "default" in node and _is_scalar(node["default"]):
        description = out.get("description", "").rstrip()
        out["description"] = f"{description} Default: {json.dumps(node['default'])}.".strip()
    if "type" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        raise UnsupportedSchemaError(f"{path}: every CRD schema node needs a type")
    return out


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _printer_column(name: str, json_path: str, type_: str, description: str) -> dict[str, str]:
    return {"name": name, "type": type_, "jsonPath": json_path, "description": description}


def _crd(
    model: type[BaseModel],
    *,
    plural: str,
    singular: str,
    short_names: list[str],
    columns: list[dict[str, str]],
    scale: bool,
) -> dict[str, Any]:
    kind = model.__name__
    schema = structural_schema(model)
    # metadata is validated by the apiserver itself; a CRD may only say it is an object.
    schema["properties"]["metadata"] = {"type": "object"}
    subresources: dict[str, Any] = {"status": {}}
    if scale:
        subresources["scale"] = {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "llmkube"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["llmkube"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


_AGE = _printer_column("Age", ".metadata.creationTimestamp", "date", "Time since creation")


def training_job_crd() -> dict[str, Any]:
    return _crd(
        LLMTrainingJob,
        plural=TRAINING_JOBS.plural,
        singular="llmtrainingjob",
        short_names=["ltj"],
        columns=[
            _printer_column("Phase", ".status.phase", "string", "Lifecycle phase"),
            _printer_column("Progress", ".status.progress.summary", "string", "Steps done"),
            _printer_column("Loss", ".status.metrics.trainLoss", "number", "Latest train loss"),
            _printer_column(
                "Finetune", ".status.finetune.summary", "string", "Fine-tuning method and share"
            ),
            _printer_column(
                "Waiting", ".status.waitingFor", "string", "What the pending pods wait for"
            ),
            _AGE,
        ],
        scale=False,
    )


def tuning_job_crd() -> dict[str, Any]:
    return _crd(
        LLMTuningJob,
        plural=TUNING_JOBS.plural,
        singular="llmtuningjob",
        short_names=["ltune"],
        columns=[
            _printer_column("Phase", ".status.phase", "string", "Lifecycle phase"),
            _printer_column("Trials", ".status.trialsSummary", "string", "Trials ended of all"),
            _printer_column(
                "Best", ".status.bestTrial.metric", "number", "Objective of the best trial"
            ),
            _AGE,
        ],
        scale=False,
    )


def deployment_crd() -> dict[str, Any]:
    return _crd(
        LLMDeployment,
        plural=DEPLOYMENTS.plural,
        singular="llmdeployment",
        short_names=["llmd"],
        columns=[
            _printer_column("Phase", ".status.phase", "string", "Lifecycle phase"),
            _printer_column("Ready", ".status.readyReplicas", "integer", "Replicas ready"),
            _printer_column("Replicas", ".spec.replicas", "integer", "Replicas asked for"),
            _printer_column("Endpoint", ".status.endpoint", "string", "OpenAI API base URL"),
            _printer_column(
                "Waiting", ".status.waitingFor", "string", "What the starting pods wait for"
            ),
            _AGE,
        ],
        scale=True,
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """Every CRD llmkube defines, keyed by the file name it is checked in under crds/."""
    return {
        f"{API_GROUP}_{TRAINING_JOBS.plural}.yaml": training_job_crd(),
        f"{API_GROUP}_{TUNING_JOBS.plural}.yaml": tuning_job_crd(),
        f"{API_GROUP}_{DEPLOYMENTS.plural}.yaml": deployment_crd(),
    }
