"""RFC 7386 JSON merge patches computed from a current and a desired document."""

from typing import Any


def merge_patch(current: Any, desired: Any) -> Any:
    """The merge patch that turns `current` into `desired` ({} when they are equal).

    Keys missing from `desired` become null (deleted); lists are replaced whole, as merge patches
    do.
    """
    if not isinstance(current, dict) or not isinstance(desired, dict):
        return desired
    patch: dict[str, Any] = {}
    for key in current.keys() - desired.keys():
        patch[key] = None
    for key, value in desired.items():
        if key not in current:
            patch[key] = value
        elif current[key] != value:
            patch[key] = (
                merge_patch(current[key], value)
                if isinstance(value, dict) and isinstance(current[key], dict)
                else value
            )
    return patch


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves that differ, e.g. ['training.maxSteps']."""
    if isinstance(before, dict) and isinstance(after, dict):
        paths: list[str] = []
        for key in sorted(before.keys() | after.keys()):
            child = f"{prefix}.{key}" if prefix else key
            paths.extend(changed_paths(before.get(key), after.get(key), child))
        return paths
    return [] if before == after else [prefix or "(root)"]
