"""Turning one dataset file into cleaned documents. Pure functions of bytes: Ray tasks run them
in parallel over the files of a dataset."""

import io
import json
import re
import unicodedata
from dataclasses import dataclass, field

from llmkube.api.training import Preprocessing

# Control characters other than tab and newline (C0, DEL, C1).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BLANK_LINES = re.compile(r"\n[ \t]*\n+")


@dataclass
class FileDocuments:
    """What one file yielded, and what it skipped and why."""

    documents: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason → count, e.g. {"not UTF-8": 1, "shorter than minChars": 3}."""
    bytes_read: int = 0

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count


def clean(text: str, preprocessing: Preprocessing) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if preprocessing.normalize_unicode != "none":
        text = unicodedata.normalize(preprocessing.normalize_unicode, text)
    if preprocessing.strip_control_characters:
        text = _CONTROL.sub("", text)
    return text.strip()


def _raw_documents(
    data: bytes, file_format: str, text_field: str, result: FileDocuments
) -> list[str]:
    if file_format == "parquet":
        return _parquet_documents(data, text_field, result)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        result.skip(f"file not UTF-8 (first bad byte at offset {error.start})")
        return []
    if file_format == "text":
        return _BLANK_LINES.split(text.replace("\r\n", "\n"))
    documents = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            result.skip("line not valid JSON")
            continue
        value = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            result.skip(f"record without a string field {text_field!r}")
            continue
        documents.append(value)
    return documents


def _parquet_documents(data: bytes, text_field: str, result: FileDocuments) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as error:
        result.skip(f"not a Parquet file ({error})")
        return []
    if text_field not in parquet.schema_arrow.names:
        result.skip(
            f"Parquet file without column {text_field!r} (has {parquet.schema_arrow.names})"
        )
        return []
    column = parquet.read(columns=[text_field]).column(text_field).to_pylist()
    documents = [value for value in column if isinstance(value, str)]
    if len(documents) < len(column):
        result.skip(f"row whose {text_field!r} is not a string", len(column) - len(documents))
    return documents


def file_documents(
    data: bytes, file_format: str, text_field: str, preprocessing: Preprocessing
) -> FileDocuments:
    result = FileDocuments(bytes_read=len(data))
    for raw in _raw_documents(data, file_format, text_field, result):
        document = clean(raw, preprocessing)
        if not document:
            continue
        if len(document) < preprocessing.min_chars:
            result.skip("shorter than minChars")
            continue
        result.documents.append(document)
    return result
