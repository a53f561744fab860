"""Storage errors that say which bucket and key, and what to check."""


class StorageError(Exception):
    """Any failure to read or write object storage."""


class NotFoundError(StorageError):
    """The bucket or object does not exist."""


class AccessDeniedError(StorageError):
    """The credentials were refused or lack permission."""


class StorageUnavailableError(StorageError):
    """The endpoint could not be reached, even after retrying."""
