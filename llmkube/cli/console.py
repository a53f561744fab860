"""`llmkube console`: the web console over the local data folder (what `llmkube run` ran)."""

from typing import Annotated

import typer
from rich.console import Console

from llmkube.local.plan import data_dir
from llmkube.local.stop_requests import StopRequests
from llmkube.stopping import Stopped

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def console(
    host: Annotated[
        str,
        typer.Option(help="Address to listen on. Anyone who reaches it sees every local run."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 9265,
) -> None:
    """Open the web console on the local data folder: training jobs with live loss curves,
    comparisons, deployments and a playground to chat with them. Ctrl-C stops it."""
    from llmkube.console.app import create_app
    from llmkube.console.local_source import LocalSource
    from llmkube.console.server import ConsoleServer

    stops = StopRequests.install()
    try:
        server = ConsoleServer(create_app(LocalSource(data_dir())), host, port).start()
    except OSError as error:
        err.print(f"[red]error:[/] cannot listen on {host}:{port}: {error.strerror}; try --port")
        raise typer.Exit(1) from None
    out.print(f"console at [bold]{server.url}[/] (data: {data_dir()}); Ctrl-C stops it")
    try:
        while not stops.wait(0.5):
            pass
        stops.check()
    except Stopped as stopped:
        raise typer.Exit(stopped.exit_code) from None
    finally:
        server.stop()
