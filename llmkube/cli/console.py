"""`llmkube console`: the web console over the local data folder (what `llmkube run` ran), or
over a cluster's objects for the person signed in."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from llmkube.local.plan import data_dir
from llmkube.local.stop_requests import StopRequests
from llmkube.stopping import Stopped

if TYPE_CHECKING:  # the console's libraries load only when it starts
    from llmkube.console.serving_numbers import PrometheusNumbers

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def console(
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on. Without --kubernetes there is no sign-in: whoever "
            "reaches it sees every local run."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 9265,
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes",
            help="Show a cluster's LLMTrainingJobs and LLMDeployments instead of local runs; "
            "each person signs in with their own bearer token and sees what RBAC lets them.",
        ),
    ] = False,
    prometheus: Annotated[
        str | None,
        typer.Option(
            envvar="LLMKUBE_PROMETHEUS_URL",
            help="Prometheus to read deployments' live requests/s, TTFT and tokens/s from.",
        ),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            help="With --kubernetes: the console's own credentials (default: in-cluster)."
        ),
    ] = None,
) -> None:
    """Open the web console: training jobs with live loss curves, comparisons, deployments and
    a playground to chat with them. Without --kubernetes, on the local data folder. Ctrl-C
    stops it."""
    from llmkube.console.server import ConsoleServer
    from llmkube.console.serving_numbers import PrometheusNumbers

    stops = StopRequests.install()
    numbers = PrometheusNumbers(prometheus) if prometheus else None
    app = _cluster_app(kubeconfig, numbers) if kubernetes else _local_app(numbers)
    where = "the cluster" if kubernetes else f"data: {data_dir()}"
    try:
        server = ConsoleServer(app, host, port).start()
    except OSError as error:
        err.print(f"[red]error:[/] cannot listen on {host}:{port}: {error.strerror}; try --port")
        raise typer.Exit(1) from None
    out.print(f"console at [bold]{server.url}[/] ({where}); Ctrl-C stops it")
    try:
        while not stops.wait(0.5):
            pass
        stops.check()
    except Stopped as stopped:
        raise typer.Exit(stopped.exit_code) from None
    finally:
        server.stop()


def _local_app(numbers: "PrometheusNumbers | None") -> Any:
    from llmkube.console.app import create_app
    from llmkube.console.local_source import LocalSource

    return create_app(LocalSource(data_dir()), prometheus=numbers)


def _cluster_app(kubeconfig: Path | None, numbers: "PrometheusNumbers | None") -> Any:
    from kubernetes import client, config

    from llmkube.console.access import KubeAccess
    from llmkube.console.app import create_app
    from llmkube.console.kube_source import KubeSource

    try:
        if kubeconfig is not None:
            api_client = config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
    except (config.ConfigException, OSError) as error:
        err.print(f"[red]error:[/] no Kubernetes credentials: {error}; pass --kubeconfig")
        raise typer.Exit(2) from None
    return create_app(KubeSource(api_client), access=KubeAccess(api_client), prometheus=numbers)
