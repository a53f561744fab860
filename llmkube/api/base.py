"""The base every wire model shares: camelCase aliases, attribute docstrings as descriptions."""

import re
from collections.abc import Iterable
from typing import Annotated, Any, Final, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

API_GROUP = "llmkube.io"
API_VERSION = "v1alpha1"
GROUP_VERSION: Final[Literal["llmkube.io/v1alpha1"]] = "llmkube.io/v1alpha1"


class WireModel(BaseModel):
    """A spec object as users write it: camelCase keys, unknown keys rejected."""

    # Attribute docstrings become schema descriptions, so `kubectl explain` and the code read alike.
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
        # Types as the apiserver checks them: "100" is not an integer, 1 is not a bool.
        strict=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as it goes on the wire: camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(WireModel):
    """A status object: written by the operator, so tolerant of fields a newer version adds."""

    model_config = ConfigDict(extra="ignore")


def invalid(message: str, **context: Any) -> PydanticCustomError:
    """A validation error whose message is shown to the user as written (no library prefix)."""
    return PydanticCustomError("invalid_spec", message, context or None)


STORAGE_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?|file:///.*)$"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_PATTERN = r"^([+]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# What each pattern means, so an error says "must be a quantity such as 16Gi", not a regex.
PATTERN_HINTS = {
    STORAGE_URI_PATTERN: "must be s3://bucket/prefix (lowercase bucket) or file:///absolute/path",
    NAME_PATTERN: "must be a Kubernetes name: lowercase letters, digits, '-' and '.'",
    LABEL_PATTERN: "must be a DNS label: lowercase letters, digits and '-'",
    QUANTITY_PATTERN: "must be a Kubernetes quantity such as 16Gi, 512Mi or 500m",
}

CLUSTER: Final = {"target": "cluster"}
"""Validation context of a resource applied to a cluster (the operator, `llmkube validate
--cluster`): what only `llmkube run` may do is refused. The apiserver refuses the same with CEL
rules, where each such rule is also written."""


def on_cluster(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and info.context.get("target") == "cluster"


FILE_URI_ON_CLUSTER = (
    "file:// URIs are for `llmkube run` on one machine; on a cluster use s3://bucket/prefix"
)
DOT_SEGMENT = "'.' and '..' are not allowed as path segments; write the path they mean"
_DOT_SEGMENT_PATTERN = r"/\.\.?(/|$)"


def _storage_uri(uri: str, info: ValidationInfo) -> str:
    if re.search(_DOT_SEGMENT_PATTERN, uri):
        raise invalid(DOT_SEGMENT)
    if on_cluster(info) and uri.startswith("file://"):
        raise invalid(FILE_URI_ON_CLUSTER)
    return uri


def normalized_prefix(uri: str) -> str:
    """A storage URI as a folder prefix: repeated slashes collapsed, one trailing slash (dot
    segments are refused by validation), for comparing where two URIs point."""
    scheme, _, path = uri.partition("://")
    root = "/" if path.startswith("/") else ""
    return f"{scheme}://{root}" + "".join(f"{part}/" for part in path.split("/") if part)


# Object-storage locations: MinIO/S3 buckets or local paths (the embedded default).
StorageUri = Annotated[
    str,
    StringConstraints(pattern=STORAGE_URI_PATTERN, max_length=1024),
    AfterValidator(_storage_uri),
    Field(
        description="Object-storage URI: s3://bucket/prefix (MinIO or any S3) or file:///abs/path.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"!self.matches(r'{_DOT_SEGMENT_PATTERN}')", "message": DOT_SEGMENT},
                {"rule": "!self.startsWith('file://')", "message": FILE_URI_ON_CLUSTER},
            ]
        },
    ),
]

# RFC 1123 subdomain, the rule for names of most Kubernetes objects.
KubernetesName = Annotated[
    str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=253)
]

# The pattern Kubernetes itself uses for resource.Quantity.
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=64)]


class Cel(NamedTuple):
    """A CEL rule for the CRD schema and what the apiserver answers when it fails: `message`, or
    `message_expression` (a CEL string expression) when the message names values. Either must
    produce the very text the model's pydantic validator raises for the same rule."""

    rule: str
    message: str
    message_expression: str | None = None

    def to_schema(self) -> JsonDict:
        schema: JsonDict = {"rule": self.rule, "message": self.message}
        if self.message_expression is not None:
            schema["messageExpression"] = self.message_expression
        return schema


def cel_rules(*rules: Cel | tuple[str, str]) -> ConfigDict:
    """Model config adding CEL rules to the model's CRD schema.

    The apiserver then rejects what it can check before the operator sees it, in the words the
    pydantic validator of the same rule uses, so `kubectl apply` and `llmkube validate` agree.
    """
    return ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [Cel(*rule).to_schema() for rule in rules]}
    )


def cel_literal_of(expression: str, values: Iterable[str]) -> str:
    """CEL giving the literal equal to `expression` (one of `values`). A message expression may
    name an enum's value this way: the apiserver's cost estimate rejects concatenating the field
    itself, or any number turned to a string, as text of unbounded size."""
    *rest, last = values
    text = f"'{last}'"
    for value in reversed(rest):
        text = f"({expression} == '{value}' ? '{value}' : {text})"
    return text


def cel_default(field: str, default: object) -> str:
    """CEL for `self.<field>`, or its default when the manifest leaves it out."""
    literal = f"'{default}'" if isinstance(default, str) else repr(default)
    return f"(has(self.{field}) ? self.{field} : {literal})"
