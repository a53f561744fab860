"""Validation errors as lines a user can act on: `spec.training.maxSteps: <what is wrong>`."""

from pydantic import ValidationError

from llmkube.api.base import PATTERN_HINTS


def field_path(location: tuple[str | int, ...]) -> str:
    """`('spec', 'tolerations', 0, 'effect')` -> `spec.tolerations[0].effect`."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def describe(error: ValidationError) -> list[str]:
    """One line per problem, naming the field (by its wire name) and what to do."""
    lines = []
    for problem in error.errors():
        location = field_path(problem["loc"]) or "(document)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = (
                "unknown field; check its spelling and the docs (llmkube crds / kubectl explain)"
            )
        elif problem["type"] == "missing":
            message = "required field is missing"
        elif problem["type"] == "string_pattern_mismatch":
            pattern = str(problem.get("ctx", {}).get("pattern", ""))
            hint = PATTERN_HINTS.get(pattern, f"must match {pattern}")
            message = f"{problem['input']!r} {hint}"
        lines.append(f"{location}: {message}")
    return lines
