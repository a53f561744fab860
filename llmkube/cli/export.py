"""`llmkube export onnx`: a published or imported model as ONNX graphs with a KV cache, checked
against PyTorch with ONNX Runtime before anything is written (docs/export.md)."""

import logging
from typing import Annotated

import typer
from rich.console import Console

from llmkube.api.export import NEWEST_OPSET, OLDEST_OPSET, OnnxDtype

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
export_app = typer.Typer(help="Export models for inference outside llmkube.", no_args_is_help=True)


def default_destination(model_uri: str) -> str:
    """A job's model/ exports next to it, as spec.export does; any other folder to a sibling
    (never into the model's own folder, whose files identify it)."""
    trimmed = model_uri.rstrip("/")
    parent, _, name = trimmed.rpartition("/")
    return f"{parent}/onnx" if name == "model" else f"{trimmed}-onnx"


@export_app.command("onnx")
def onnx(
    model: Annotated[
        str,
        typer.Argument(
            help="The model: a job's model/ folder, a version, an imported Hugging Face model "
            "or a LoRA adapter (exported merged into its base)."
        ),
    ],
    destination: Annotated[
        str | None,
        typer.Argument(help="Where the export goes (default: onnx/ next to a job's model/)."),
    ] = None,
    opset: Annotated[
        int,
        typer.Option(
            min=OLDEST_OPSET,
            max=NEWEST_OPSET,
            help=f"ONNX operator set: {OLDEST_OPSET} (the exporter's oldest) to {NEWEST_OPSET} "
            "(the newest ONNX Runtime 1.31 runs).",
        ),
    ] = OLDEST_OPSET,
    dtype: Annotated[OnnxDtype, typer.Option(help="Precision of the graphs.")] = "float32",
) -> None:
    """Export MODEL as a prefill and a decode graph with an explicit KV cache, its tokenizer and
    export.json; ONNX Runtime must match PyTorch within the parity bound or nothing is
    written. S3 endpoints and keys come from LLMKUBE_S3_ENDPOINT, AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY."""
    from llmkube.api.export import OnnxExportSpec
    from llmkube.api.runconfig import StorageConfig
    from llmkube.runtime.export.errors import ExportError
    from llmkube.runtime.export.exporting import export_onnx
    from llmkube.runtime.models.errors import ModelError
    from llmkube.storage import StorageError

    progress = logging.getLogger("llmkube.export")
    progress.setLevel(logging.INFO)
    progress.addHandler(logging.StreamHandler())
    target = destination or default_destination(model)
    try:
        manifest = export_onnx(
            model, target, StorageConfig(), OnnxExportSpec(enabled=True, opset=opset, dtype=dtype)
        )
    except (ExportError, ModelError, StorageError) as error:
        err.print(f"[red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
    parity = manifest.parity
    out.print(
        f"[green]✓[/] exported {manifest.architecture} ({manifest.layers} layers, opset "
        f"{manifest.opset}, {manifest.dtype}) to {target} in {manifest.export_seconds:.0f} s; "
        f"max |Δlogits| against PyTorch {parity.prefill_max_abs_diff:.2g} (prefill), "
        f"{parity.decode_max_abs_diff:.2g} (decode), bound {parity.bound:g}",
        highlight=False,
    )
