"""Local runs written as `llmkube run` and the training runtime write them (run config, state,
progress.json, metrics.jsonl), for the console's unit tests and benchmarks: a thousand jobs or a
run of 100,000 steps without training them."""

import json
import math
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from llmkube.api import LLMTrainingJob, LLMTuningJob
from llmkube.api.artifacts import METRICS_FILE, PROGRESS_FILE, ProgressRecord
from llmkube.api.runconfig import training_run_config, tuning_run_config
from llmkube.api.tuning import (
    TRIALS_FILE,
    TUNING_CONFIG_FILE,
    BestTrial,
    TrialCounts,
    TrialRecord,
    TuningProgress,
)
from llmkube.local.run_state import write_state
from llmkube.storage.uri import local_path
from llmkube.testing.manifests import training_job_manifest
from llmkube.testing.processes import ServerProcess, free_port, wait_until


def metrics_lines(steps: int, *, eval_every: int = 0, learning_rate: float = 1e-3) -> str:
    """A falling loss over `steps` train records, with an eval record every `eval_every`."""
    lines = []
    for step in range(1, steps + 1):
        loss = 2.0 + 6.0 * math.exp(-step / max(steps / 5, 1))
        lines.append(
            {
                "step": step,
                "kind": "train",
                "train_loss": loss,
                "learning_rate": learning_rate,
                "tokens_per_second": 1000.0 + step % 7,
            }
        )
        if eval_every and step % eval_every == 0:
            lines.append(
                {
                    "step": step,
                    "kind": "eval",
                    "eval_loss": loss + 0.1,
                    "perplexity": math.exp(loss + 0.1),
                    "accuracy": 0.5,
                    "samples": [{"prompt": "The for statement", "completion": " iterates"}],
                }
            )
    return "".join(json.dumps(line) + "\n" for line in lines)


def write_local_run(
    data_dir: Path,
    name: str,
    *,
    steps: int,
    total_steps: int | None = None,
    phase: str = "Running",
    learning_rate: float = 1e-3,
    eval_every: int = 0,
    started_at: str = "2026-11-30T12:00:00+00:00",
) -> Path:
    """The folders of one local training run; returns its output folder."""
    output = data_dir / "models" / name
    manifest = training_job_manifest(
        name,
        dataset={"source": f"file://{data_dir}/datasets/text/"},
        training={"maxSteps": total_steps or steps, "learningRate": learning_rate},
        output=f"file://{output}/",
    )
    config = training_run_config(LLMTrainingJob.model_validate(manifest))
    workdir = data_dir / "runs" / name
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "run.json").write_text(config.model_dump_json(by_alias=True))
    write_state(workdir, phase, started_at=started_at)
    folder = local_path(config.output)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METRICS_FILE).write_text(
        metrics_lines(steps, eval_every=eval_every, learning_rate=learning_rate)
    )
    progress = ProgressRecord(
        step=steps, total_steps=total_steps or steps, eta_s=12.0, updated_at=started_at
    )
    (folder / PROGRESS_FILE).write_text(progress.model_dump_json())
    return folder


def write_local_search(
    data_dir: Path, name: str, trials: list[TrialRecord], *, phase: str = "Running"
) -> Path:
    """The folders of one local search as `llmkube run` and the search runtime write them (its
    run config, state, trials.jsonl and progress.json); returns its output folder."""
    output = data_dir / "models" / name
    job = LLMTuningJob.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "template": training_job_manifest(
                    name,
                    dataset={"source": f"file://{data_dir}/datasets/text/"},
                    output=f"file://{output}/",
                )["spec"],
                "searchSpace": {
                    "training.learningRate": {"type": "loguniform", "min": 1e-4, "max": 1e-2},
                    "training.batchSize": {"type": "choice", "values": [4, 8]},
                },
                "trials": {"max": len(trials)},
            },
        }
    )
    config = tuning_run_config(job)
    workdir = data_dir / "tuning" / name
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / TUNING_CONFIG_FILE).write_text(config.model_dump_json(by_alias=True))
    write_state(workdir, phase, started_at="2026-11-30T12:00:00+00:00")
    output.mkdir(parents=True, exist_ok=True)
    (output / TRIALS_FILE).write_text("".join(t.model_dump_json() + "\n" for t in trials))
    best = min(
        (t for t in trials if t.state == "succeeded" and t.metric is not None),
        key=lambda t: t.metric or 0.0,
        default=None,
    )
    progress = TuningProgress(
        trials=TrialCounts(
            total=len(trials),
            running=sum(t.state == "running" for t in trials),
            succeeded=sum(t.state == "succeeded" for t in trials),
            stopped_early=sum(t.state == "stopped_early" for t in trials),
            failed=sum(t.state == "failed" for t in trials),
        ),
        best_trial=(
            BestTrial(trial=best.trial, params=best.params, metric=best.metric or 0.0, step=40)
            if best
            else None
        ),
        updated_at="2026-11-30T12:00:00+00:00",
    )
    (output / PROGRESS_FILE).write_text(progress.model_dump_json())
    return output


def start_cluster_console(
    kubeconfig: Path, log_dir: Path, env: Mapping[str, str]
) -> tuple[ServerProcess, str]:
    """`llmkube console --kubernetes` as the chart runs it, with `kubeconfig` as its own
    identity; returns the process and its URL once it answers."""
    port = free_port()
    process = ServerProcess(
        "console",
        [
            sys.executable,
            "-m",
            "llmkube.cli.main",
            "console",
            "--kubernetes",
            "--kubeconfig",
            str(kubeconfig),
            "--port",
            str(port),
        ],
        log_dir,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        process.check_running()
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    wait_until(healthy, timeout=60, what="the console")
    return process, url
