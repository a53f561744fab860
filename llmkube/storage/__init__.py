"""Object storage over s3:// (MinIO or any S3) and file://, used by the runtime, operator and CLI.

Never imports torch, ray or kopf.
"""

from llmkube.storage.errors import (
    AccessDeniedError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
)
from llmkube.storage.store import ObjectInfo, ObjectStore, open_store

__all__ = [
    "AccessDeniedError",
    "NotFoundError",
    "ObjectInfo",
    "ObjectStore",
    "StorageError",
    "StorageUnavailableError",
    "open_store",
]
