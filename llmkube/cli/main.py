"""`llmkube`: local runs, CRD export and manifest validation."""

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from llmkube import __version__
from llmkube.api.crd import all_crds
from llmkube.cli import console, export, manifests, model_commands, models, run
from llmkube.local.plan import DATA_DIR_ENV, data_dir

app = typer.Typer(
    name="llmkube",
    help="Train and serve language models from LLMTrainingJob / LLMDeployment manifests.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.command()
def version() -> None:
    """Print the llmkube version."""
    out.print(__version__)


@app.command()
def crds(
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Write one file per CRD here instead of stdout."),
    ] = None,
) -> None:
    """Print the CustomResourceDefinitions (generated from the API models)."""
    rendered = {name: yaml.safe_dump(crd, sort_keys=False) for name, crd in all_crds().items()}
    if output_dir is None:
        typer.echo("---\n".join(rendered.values()), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (output_dir / name).write_text(text, encoding="utf-8")
        err.print(f"wrote {output_dir / name}")


@app.command()
def dashboards(
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Folder for the JSON and rules files.")
    ],
) -> None:
    """Write the Grafana dashboards and the Prometheus alert rules."""
    from llmkube.cli import observability

    output_dir.mkdir(parents=True, exist_ok=True)
    for name, board in observability.dashboards().items():
        (output_dir / name).write_text(json.dumps(board, indent=2) + "\n", encoding="utf-8")
        err.print(f"wrote {output_dir / name}")
    rules = output_dir / "prometheus-rules.yaml"
    rules.write_text(yaml.safe_dump(observability.alert_rules(), sort_keys=False))
    err.print(f"wrote {rules}")


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders.")],
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Also refuse what only `llmkube run` accepts (file:// URIs, serving without an "
            "API key), as the apiserver and the operator do.",
        ),
    ] = False,
) -> None:
    """Validate manifests exactly as the operator does; exit 1 if any is invalid.
    ${LLMKUBE_DATA_DIR} stands for the local data folder, as in `llmkube run`. What a cluster
    would refuse but `llmkube run` accepts is listed as a note, or refused with --cluster."""
    try:
        documents = manifests.load(paths, {DATA_DIR_ENV: str(data_dir())})
    except FileNotFoundError as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    failed = 0
    for doc in documents:
        label = f"{doc.source} {doc.kind or '?'}/{doc.name or '?'}"
        problems = doc.problems + (doc.cluster_problems if cluster else [])
        if problems:
            failed += 1
            err.print(f"[red]✗[/] {label}")
            for problem in problems:
                err.print(f"    {problem}", markup=False, highlight=False)
        elif doc.is_llmkube:
            out.print(f"[green]✓[/] {label}")
            for problem in doc.cluster_problems:
                out.print(f"    [yellow]on a cluster:[/] {problem}", highlight=False)
        else:
            out.print(f"[dim]- {label} (not an llmkube kind; skipped)[/]")
    if not any(doc.is_llmkube for doc in documents):
        err.print("[yellow]no LLMTrainingJob or LLMDeployment found[/]")
        raise typer.Exit(1)
    if failed:
        err.print(f"[red]{failed} invalid document(s)[/]")
        raise typer.Exit(1)


app.command()(run.run)
app.add_typer(run.data_app, name="data")
app.add_typer(models.models_app, name="models")
app.add_typer(export.export_app, name="export")
app.command()(model_commands.generate)
app.command()(model_commands.status)
app.command()(model_commands.chat)
app.command()(console.console)

if __name__ == "__main__":
    app()
