"""Checking that the Secrets a resource references exist, with a message saying what to create;
and reading S3 credentials out of one."""

import base64
from collections.abc import Mapping
from typing import Any

from llmkube.api.common import StorageSpec
from llmkube.api.runconfig import ACCESS_KEY_ENV, SECRET_KEY_ENV
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


def credentials_env(secret: Mapping[str, object], storage: StorageSpec) -> dict[str, str]:
    """The S3 credentials from a Secret, as the environment variables storage reads."""
    reference = storage.credentials_secret
    data = secret.get("data") or {}
    if reference is None or not isinstance(data, dict):
        return {}
    return {
        env: base64.b64decode(data[key]).decode()
        for env, key in (
            (ACCESS_KEY_ENV, reference.access_key_id_key),
            (SECRET_KEY_ENV, reference.secret_access_key_key),
        )
        if key in data
    }
