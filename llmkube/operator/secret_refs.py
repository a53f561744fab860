"""Checking that the Secrets a resource references exist, with a message saying what to create."""

from typing import Any

from llmkube.operator.kube import SECRETS, KubeApi


def find_secret(
    api: KubeApi, namespace: str, name: str, keys: list[str]
) -> tuple[dict[str, Any] | None, str | None]:
    """(the Secret, None) when it has every key, else (None, what is missing and what to do)."""
    secret = api.get(SECRETS, namespace, name)
    if secret is None:
        return None, f"Secret {name} not found in namespace {namespace}; create it"
    missing = [key for key in keys if key not in (secret.get("data") or {})]
    if missing:
        return None, f"Secret {name} has no key {', '.join(missing)}; add it"
    return secret, None
