"""Splitting storage URIs into their parts."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3(uri: str) -> S3Location:
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"{uri}: no bucket name")
    return S3Location(bucket, key)


def local_path(uri: str) -> Path:
    if not uri.startswith("file://"):
        raise ValueError(f"{uri}: not a file:// URI")
    path = Path(uri.removeprefix("file://"))
    if not path.is_absolute():
        raise ValueError(f"{uri}: file:// URIs take an absolute path (file:///data/...)")
    return path


def join(uri: str, *parts: str) -> str:
    """`join("s3://b/out/", "model", "config.json")` -> `s3://b/out/model/config.json`."""
    return "/".join([uri.rstrip("/"), *(part.strip("/") for part in parts)])
