"""Creating the objects a resource controls, without ever taking over someone else's.

The operator's children have deterministic names, so an object of that name may already exist:
our own (a reconcile after a restart) or one a person or another tool made. Only an object whose
controller ownerReference is the resource itself is ours to patch or delete; anything else is a
name conflict, reported to the user, and left alone.
"""

from typing import Any

from llmkube.operator.blocked import BlockedError
from llmkube.operator.kube import ApiError, KubeApi, Resource

Body = dict[str, Any]


class NameConflictError(BlockedError):
    """An object the resource would create exists and belongs to something else; retried until
    the user renames the resource or removes the object."""

    phase, reason = "Pending", "NameConflict"


def controller_uid(body: Body) -> str | None:
    for reference in body.get("metadata", {}).get("ownerReferences") or []:
        if reference.get("controller"):
            uid: str | None = reference.get("uid")
            return uid
    return None


def check_owned(existing: Body, desired: Body) -> None:
    """Raise NameConflictError unless `existing` is controlled by `desired`'s controller."""
    owner = controller_uid(desired)
    assert owner is not None, "children are built with a controller ownerReference"
    if controller_uid(existing) == owner:
        return
    meta = desired["metadata"]
    reference = next(r for r in meta["ownerReferences"] if r.get("controller"))
    raise NameConflictError(
        f"a {desired['kind']} named {meta['name']} already exists in namespace "
        f"{meta['namespace']} and is not controlled by this {reference['kind']}; llmkube leaves "
        f"it alone. Delete or rename that {desired['kind']}, or give the "
        f"{reference['kind']} another name"
    )


def create_or_get_owned(
    api: KubeApi, resource: Resource, namespace: str, desired: Body
) -> tuple[Body, bool]:
    """(object, created): creates it, or returns ours already there under that name."""
    existing, created = api.create_or_get(resource, namespace, desired)
    if not created:
        check_owned(existing, desired)
    return existing, created


def delete_owned(
    api: KubeApi, resource: Resource, namespace: str, name: str, owner_uid: str
) -> None:
    """Delete the object if it exists and is ours."""
    existing = api.get(resource, namespace, name)
    if existing is None or controller_uid(existing) != owner_uid:
        return
    try:
        api.delete(resource, namespace, name)
    except ApiError as error:
        if error.status != 404:
            raise
