"""Where Ray Tune keeps a search's experiment state: under the search's output, in the same
object storage, so that a driver restarted anywhere resumes it."""

import os

import pyarrow.fs

from llmkube.api.runconfig import TuningRunConfig
from llmkube.api.tuning import TUNE_DIR
from llmkube.storage.store import s3_endpoint
from llmkube.storage.uri import join, local_path, parse_s3

DEFAULT_REGION = "us-east-1"


def experiment_location(config: TuningRunConfig) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Tune's storage_path (the experiment's parent folder) and the filesystem it lies on
    (None: a local path)."""
    uri = join(config.output, TUNE_DIR)
    if uri.startswith("file://"):
        return str(local_path(uri)), None
    location = parse_s3(uri)
    endpoint, secure = s3_endpoint(uri, config.storage, os.environ)
    filesystem = pyarrow.fs.S3FileSystem(
        access_key=os.environ.get(config.storage.access_key_env),
        secret_key=os.environ.get(config.storage.secret_key_env),
        endpoint_override=endpoint,
        scheme="https" if secure else "http",
        region=config.storage.region or DEFAULT_REGION,
    )
    return f"{location.bucket}/{location.key}", filesystem
