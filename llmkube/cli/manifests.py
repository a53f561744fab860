"""Reading llmkube resources from YAML files and folders, with the operator's validation."""

import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from llmkube.api import GROUP_VERSION, LLMDeployment, LLMTrainingJob, LLMTuningJob
from llmkube.api.base import CLUSTER
from llmkube.api.errors import describe

Resource = LLMTrainingJob | LLMTuningJob | LLMDeployment
KINDS: dict[str, type[Resource]] = {
    "LLMTrainingJob": LLMTrainingJob,
    "LLMTuningJob": LLMTuningJob,
    "LLMDeployment": LLMDeployment,
}
YAML_SUFFIXES = {".yaml", ".yml", ".json"}


@dataclass
class Document:
    """One YAML document and what validating it found."""

    source: str
    """file path and document number, e.g. examples/job.yaml#2"""
    kind: str | None
    name: str | None
    resource: Resource | None = None
    problems: list[str] = field(default_factory=list)
    cluster_problems: list[str] = field(default_factory=list)
    """What only `llmkube run` accepts (file:// URIs, serving without an API key): the apiserver
    and the operator refuse it."""

    @property
    def is_llmkube(self) -> bool:
        return self.kind in KINDS


def manifest_files(paths: Iterable[Path]) -> list[Path]:
    """The YAML files named, with folders expanded (sorted, not recursive into hidden dirs)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in YAML_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return files


def load(paths: Iterable[Path], variables: Mapping[str, str] | None = None) -> list[Document]:
    """Every document in the given files and folders, each validated if it is an llmkube kind.
    With `variables`, `${NAME}` in the files is replaced first (what `llmkube run` does for
    `${LLMKUBE_DATA_DIR}`)."""
    return [doc for file in manifest_files(paths) for doc in _documents(file, variables)]


def _documents(file: Path, variables: Mapping[str, str] | None) -> Iterator[Document]:
    try:
        text = file.read_text(encoding="utf-8")
        if variables:
            text = string.Template(text).safe_substitute(variables)
        raw_docs = list(yaml.safe_load_all(text))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        yield Document(
            source=str(file), kind=None, name=None, problems=[f"not valid YAML: {error}"]
        )
        return
    for index, raw in enumerate(raw_docs, start=1):
        if raw is None:
            continue
        yield parse(raw, source=f"{file}#{index}")


def parse(raw: object, *, source: str) -> Document:
    """Validate one decoded document as the operator would."""
    if not isinstance(raw, dict):
        return Document(source, None, None, problems=["a manifest must be a mapping (kind: ...)"])
    kind = raw.get("kind")
    name = (
        (raw.get("metadata") or {}).get("name") if isinstance(raw.get("metadata"), dict) else None
    )
    doc = Document(source=source, kind=kind if isinstance(kind, str) else None, name=name)
    if doc.kind not in KINDS:
        return doc
    if raw.get("apiVersion") != GROUP_VERSION:
        doc.problems.append(
            f"apiVersion: expected {GROUP_VERSION} for kind {kind}, got {raw.get('apiVersion')!r}"
        )
        return doc
    try:
        doc.resource = KINDS[doc.kind].model_validate(raw)
    except ValidationError as error:
        doc.problems.extend(describe(error))
        return doc
    try:
        KINDS[doc.kind].model_validate(raw, context=CLUSTER)
    except ValidationError as error:
        doc.cluster_problems.extend(describe(error))
    return doc
