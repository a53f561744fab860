"""What a search costs over running its trials yourself, and what early stopping saves.

(a) llmkube: a random search (fixed seed) of N short trials of a tiny GPT over the learning
    rate, P at a time, as a RayJob runs it (`python -m llmkube.runtime.tune`);
(b) baseline: the very same N trials (the values (a) drew, the same run configs) as plain
    training jobs (`python -m llmkube.runtime.train` each, with its own local Ray), P at a time;
(c) the same search (the same draws) with ASHA, grace period a quarter of the steps.

Prints (a)/(b) wall time (goal ≤ 1.1) and, for (c), the optimizer steps trained and the wall
time against running every trial to the end.

    .venv/bin/python benchmarks/tuning_overhead.py [--trials 6] [--parallel 2] [--steps 40]
"""

import argparse
import json
import pydoc_data.topics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmkube.api import LLMTuningJob
from llmkube.api.runconfig import TuningRunConfig, trial_run_config, tuning_run_config
from llmkube.api.tuning import TRIALS_FILE
from llmkube.local.runner import train_command, tune_command, write_run_config

PATH = "training.learningRate"


def search_config(root: Path, name: str, args: argparse.Namespace, asha: bool) -> TuningRunConfig:
    spec: dict[str, object] = {
        "template": {
            "model": {"preset": "tiny"},
            "tokenizer": {"type": "byte"},
            "dataset": {"source": f"file://{root}/data/"},
            "training": {"maxSteps": args.steps, "batchSize": 8},
            "evaluation": {"interval": max(1, args.steps // 4), "batches": 4},
            "checkpoint": {"interval": args.steps},
            "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 1},
            "output": f"file://{root}/{name}/",
        },
        "searchSpace": {PATH: {"type": "loguniform", "min": 1e-5, "max": 3e-2}},
        "seed": args.seed,
        "trials": {"max": args.trials, "parallel": args.parallel},
    }
    if asha:
        spec["earlyStopping"] = {"type": "asha", "gracePeriod": max(1, args.steps // 4)}
    return tuning_run_config(
        LLMTuningJob.model_validate({"metadata": {"name": name}, "spec": spec})
    )


def timed(command: list[str], log: Path) -> float:
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if code.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code.returncode}); see {log}")
    return time.monotonic() - started


def run_search(config: TuningRunConfig, root: Path) -> float:
    path = write_run_config(config, root / f"{config.job.name}.json")
    return timed(tune_command(path), root / f"{config.job.name}.log")


def drawn(config: TuningRunConfig) -> list[dict[str, Any]]:
    path = Path(config.output.removeprefix("file://")) / TRIALS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def run_plain(config: TuningRunConfig, values: list[Any], root: Path, parallel: int) -> float:
    """The given trials as training jobs of their own, `parallel` at a time."""
    runs = [trial_run_config(config, f"plain-{i}", {PATH: value}) for i, value in enumerate(values)]

    def one(index: int) -> float:
        path = write_run_config(runs[index], root / f"plain-{index}.json")
        return timed(train_command(path), root / f"plain-{index}.log")

    started = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, range(len(runs))))
    return time.monotonic() - started


def steps_trained(config: TuningRunConfig) -> int:
    return sum(int(record.get("step") or 0) for record in drawn(config))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="llmkube-tuning-bench-"))
    (root / "data").mkdir()
    (root / "data" / "corpus.txt").write_text("\n\n".join(pydoc_data.topics.topics.values()))
    search = search_config(root, "search", args, asha=False)
    plain_config = search_config(root, "plain", args, asha=False)
    asha = search_config(root, "asha", args, asha=True)
    print(f"{args.trials} trials of {args.steps} steps, {args.parallel} at a time; logs in {root}")
    llmkube = run_search(search, root)
    print(f"(a) llmkube search:        {llmkube:6.1f} s")
    values = [record["params"][PATH] for record in drawn(search)]
    baseline = run_plain(plain_config, values, root, args.parallel)
    print(f"(b) plain training jobs:   {baseline:6.1f} s")
    stopped = run_search(asha, root)
    print(f"(c) llmkube search + ASHA: {stopped:6.1f} s")
    full = args.trials * args.steps
    trained = steps_trained(asha)
    print()
    print(f"search / plain jobs, wall time: {llmkube / baseline:.2f}  (goal ≤ 1.1)")
    print(
        f"ASHA: {trained} of {full} steps trained ({1 - trained / full:.0%} saved), "
        f"wall time {stopped / llmkube:.2f} of the search without it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
