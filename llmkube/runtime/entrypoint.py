"""What `python -m llmkube.runtime.train` and `python -m llmkube.runtime.tune` share: reading
the run config, logging, the exit codes (0 done, 2 refused with a message and no traceback,
128 + N stopped by signal N) and shutting Ray down on a stop signal."""

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import ray

from llmkube.api.runconfig import RunConfig, RunConfigError, read_run_config
from llmkube.stopping import (
    exit_code,
    ignore_stop_signals,
    raise_on_stop_signals,
    signal_name,
    stop_signal,
    stop_with_parent,
)


def stop_ray() -> None:
    """On a stop signal: the local cluster goes with its workers (on a cluster, the driver
    disconnects and Ray ends the job's actors). A checkpoint being written is incomplete
    without its state.json, and ignored."""
    ignore_stop_signals()
    ray.shutdown()


def entrypoint(
    argv: list[str] | None,
    *,
    prog: str,
    description: str | None,
    kind: type[RunConfig],
    run: Callable[[RunConfig], int],
    refusals: tuple[type[Exception], ...],
    resumes: str,
    log: logging.Logger,
) -> int:
    """Run `run` on the config named by --config; `resumes` says what the same command does
    after a stop signal."""
    raise_on_stop_signals()
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, type=Path, help="the run config")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout
    )
    try:
        config = read_run_config(args.config, kind)
    except RunConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        stop_with_parent()
        code = run(config)
    except refusals as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        stop_ray()
        signum = stop_signal(interrupt)
        log.info("stopped by %s; %s", signal_name(signum), resumes)
        return exit_code(signum)
    log.info("done in %.0fs", time.monotonic() - started)
    return code
