"""What another process on the same cores costs the model's decode step.

The bare decode step at a static batch of 16 (serve_throughput's (d)) runs alone and beside a
co-runner: a process that busy-loops for a share of every 2 ms and sleeps the rest, the way an
HTTP proxy, a client or a daemon wakes up for a little work many times a second. Runs
alternate, alone then beside, so that drift on a noisy machine hits both; the ratio is the
median of the pairs. With torch's threads on every core, the step is as slow as its slowest
thread, so a co-runner taking a share of one core costs more than that share of throughput.

    .venv/bin/python benchmarks/corunner_cost.py [--preset small] [--shares 0.05 0.1 0.25]
"""

import argparse
import statistics
import subprocess
import sys
import time

import torch
from serve_throughput import ideal_decode, preset_model  # the script's folder is on sys.path

CORUNNER = """
import sys, time
share, period = float(sys.argv[1]), 0.002
while True:
    began = time.perf_counter()
    while time.perf_counter() - began < share * period:
        pass
    time.sleep((1 - share) * period)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.05, 0.1, 0.25])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=128)
    args = parser.parse_args()

    _, model = preset_model(args.preset, vocab_size=8192)
    print(f"model {args.preset}, bare decode at batch 16, {torch.get_num_threads()} threads")
    print(f"{'co-runner share of one core':>28}  {'alone':>10}  {'beside':>10}  ratio")
    for share in args.shares:
        alone, beside = [], []
        for _ in range(args.pairs):
            alone.append(ideal_decode(model, 32, args.steps))
            corunner = subprocess.Popen([sys.executable, "-c", CORUNNER, str(share)])
            time.sleep(0.5)  # past the interpreter's start-up
            try:
                beside.append(ideal_decode(model, 32, args.steps))
            finally:
                corunner.kill()
                corunner.wait()
        ratio = statistics.median(b / a for a, b in zip(alone, beside, strict=True))
        print(
            f"{share:>28.0%}  {statistics.median(alone):>6,.0f} t/s  "
            f"{statistics.median(beside):>6,.0f} t/s  {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
