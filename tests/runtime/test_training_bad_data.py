"""Bad data and bad storage settings end the training entrypoint with exit code 2 and one clear
message naming what to fix, never a traceback from inside a library."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmkube.testing.minio import MinioServer
from llmkube.testing.training import TrainingProcess
from tests.runtime.training_helpers import run_config, upload

TIMEOUT = 180.0


def run_and_fail(
    minio: MinioServer,
    tmp_path: Path,
    source: str,
    output: str,
    *,
    env: dict[str, str] | None = None,
    spec: dict[str, object] | None = None,
) -> str:
    config = run_config("bad", source=source, output=output, endpoint=minio.endpoint, spec=spec)
    with TrainingProcess(config, tmp_path, env or minio.env) as run:
        code = run.wait(TIMEOUT)
    assert code == 2, run.log[-3000:]
    assert "Traceback" not in run.log, run.log[-3000:]
    return run.log


def test_empty_prefix(minio: MinioServer, bucket: str, tmp_path: Path) -> None:
    log = run_and_fail(minio, tmp_path, f"s3://{bucket}/nothing/", f"s3://{bucket}/out/")
    assert f"dataset.source s3://{bucket}/nothing/ holds no files" in log


def test_missing_bucket(minio: MinioServer, bucket: str, tmp_path: Path) -> None:
    log = run_and_fail(minio, tmp_path, "s3://no-such-bucket/data/", f"s3://{bucket}/out/")
    assert "dataset.source: s3://no-such-bucket/data/: NoSuchBucket" in log


def test_wrong_credentials(minio: MinioServer, bucket: str, tmp_path: Path) -> None:
    upload(minio, bucket, "data/a.txt", b"some text " * 100)
    wrong = {"AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    log = run_and_fail(minio, tmp_path, f"s3://{bucket}/data/", f"s3://{bucket}/out/", env=wrong)
    assert "InvalidAccessKeyId" in log
    assert "check the access key pair" in log


def test_only_non_utf8_files(minio: MinioServer, bucket: str, tmp_path: Path) -> None:
    upload(minio, bucket, "data/latin1.txt", "café crème ".encode("latin-1") * 200)
    log = run_and_fail(minio, tmp_path, f"s3://{bucket}/data/", f"s3://{bucket}/out/")
    assert "no documents left" in log
    assert "1 file not UTF-8 (first bad byte at offset 3)" in log


def test_jsonl_records_without_the_field(minio: MinioServer, bucket: str, tmp_path: Path) -> None:
    lines = "".join(json.dumps({"body": f"document {i} " * 20}) + "\n" for i in range(50))
    upload(minio, bucket, "data/docs.jsonl", lines.encode())
    log = run_and_fail(
        minio,
        tmp_path,
        f"s3://{bucket}/data/",
        f"s3://{bucket}/out/",
        spec={"dataset": {"source": f"s3://{bucket}/data/", "format": "jsonl"}},
    )
    assert "50 record without a string field 'text'" in log
    assert "dataset.textField" in log


def test_dataset_smaller_than_one_sequence(minio: MinioServer, bucket: str, tmp_path: Path) -> None:
    upload(minio, bucket, "data/short.txt", b"Too short to fill one sequence.")
    log = run_and_fail(minio, tmp_path, f"s3://{bucket}/data/", f"s3://{bucket}/out/")
    assert "fewer than one sequence of contextLength+1 = 129" in log


@pytest.mark.parametrize("content", [b"{not json", b""])
def test_unreadable_run_config(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "run.json"
    path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "llmkube.runtime.train", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "is not a valid run config" in result.stderr
    assert "Traceback" not in result.stderr
