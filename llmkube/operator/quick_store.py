"""How the operator reads object storage: briefly. A status update or a reconcile must not hang
on an outage, or on an endpoint that accepts connections and never answers; the next tick or
reconcile tries again, and the replicas and training workers do the patient reads."""

from collections.abc import Mapping

from llmkube.api.runconfig import StorageConfig
from llmkube.storage import ObjectStore, open_store

RETRY_SECONDS = 2.0
TIMEOUT_SECONDS = 5.0


def quick_store(uri: str, storage: StorageConfig, credentials: Mapping[str, str]) -> ObjectStore:
    return open_store(
        uri,
        storage,
        environ=credentials,
        retry_for_seconds=RETRY_SECONDS,
        timeout_seconds=TIMEOUT_SECONDS,
    )
