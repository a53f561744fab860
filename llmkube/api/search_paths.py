"""Field paths into a spec model as users write them (`training.learningRate`): which field a
path names, so a search space naming an unknown field is refused with the names it could use."""

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo


class PathError(ValueError):
    """A path that names no settable field of the model; the message says what it could be."""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class a field holds (`X`, `X | None`, `Annotated[X, ...]`), if any."""
    if get_origin(annotation) is Annotated:
        return _model_in(get_args(annotation)[0])
    if get_origin(annotation) in (Union, types.UnionType):
        models = [m for m in map(_model_in, get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _by_wire_name(model: type[BaseModel]) -> dict[str, FieldInfo]:
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def leaf_field(model: type[BaseModel], path: str) -> FieldInfo:
    """The field `path` (wire names joined by dots) names; it must hold a value, not an
    object."""
    current: type[BaseModel] | None = model
    walked: list[str] = []
    info: FieldInfo | None = None
    for part in path.split("."):
        if current is None:
            raise PathError(f"{'.'.join(walked)} holds a value, not fields")
        fields = _by_wire_name(current)
        if part not in fields:
            where = ".".join(walked) or "the template"
            raise PathError(
                f"{part!r} is not a field of {where}; its fields are {', '.join(sorted(fields))}"
            )
        walked.append(part)
        info = fields[part]
        current = _model_in(info.annotation)
    assert info is not None
    if current is not None:
        raise PathError(f"{path} is an object; name one of its fields")
    return info
