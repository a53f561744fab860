"""The console's speed: p95 time to first byte of the jobs page with 1,000 jobs (one page of 50
shown, filtered and paged on the server) and of a job page whose metrics.jsonl holds 100,000
rows (the curves thinned on the server), against the same server's /healthz side by side (the
floor every page pays: HTTP, the middleware, the sign-in check); and how long after a new line
of metrics.jsonl the live chart's event arrives. Goals: ≤ 200 ms each p95, ≤ 2 s for the event.

The console runs as `llmkube console` does (its own process, over a local data folder written
as `llmkube run` and the training runtime write it); the client is this process. `--cluster`:
the jobs page as `llmkube console --kubernetes` serves it, with the jobs as LLMTrainingJobs in a
real apiserver and every request signed in (TokenReview and SubjectAccessReviews included).

    .venv/bin/python benchmarks/console.py [--jobs 1000] [--rows 100000] [--requests 60]
    .venv/bin/python benchmarks/console.py --cluster [--jobs 1000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx

from llmkube.testing.console import write_local_run
from llmkube.testing.processes import free_port, wait_until


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18] if len(samples) >= 20 else max(samples)


def ttfb(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    with client.stream("GET", url) as response:
        next(response.iter_raw())
        response.raise_for_status()
    return time.perf_counter() - started


def measure(client: httpx.Client, urls: dict[str, str], requests: int) -> dict[str, list[float]]:
    """Interleaved, so that each page and the floor see the same moments of a noisy machine."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    for url in urls.values():  # warm caches: the first look parses metrics.jsonl
        ttfb(client, url)
    for _ in range(requests):
        for name, url in urls.items():
            samples[name].append(ttfb(client, url))
    return samples


def event_delay(base: str, metrics: Path, rows: int, tries: int) -> list[float]:
    """Append one train record, as the runtime's reporter rewrites the file, and time the
    points event that carries it."""
    delays = []
    text = metrics.read_text()
    with httpx.Client(timeout=30) as client:
        for attempt in range(tries):
            step = rows + attempt + 1
            url = f"{base}/jobs/local/big/points?after={step - 1}"
            with client.stream("GET", url) as stream:
                time.sleep(0.3)  # the stream's first look sees nothing new
                line = {"step": step, "kind": "train", "train_loss": 2.0}
                text += json.dumps(line) + "\n"
                partial = metrics.with_name(".tmp-metrics")
                partial.write_text(text)
                written = time.perf_counter()
                partial.replace(metrics)
                for received in stream.iter_lines():
                    if received.startswith("event: points"):
                        delays.append(time.perf_counter() - written)
                        break
    return delays


def report(samples: dict[str, list[float]]) -> None:
    floor = p95(samples["floor (/healthz)"])
    print(f"\n{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'p95 / floor':>12}  goal")
    for name, values in samples.items():
        goal = "" if name.startswith("floor") else "p95 ≤ 200 ms"
        print(
            f"{name:32} {statistics.median(values) * 1000:8.1f} {p95(values) * 1000:8.1f} "
            f"{p95(values) / floor:12.1f}  {goal}"
        )


def cluster(jobs: int, requests: int) -> None:
    from llmkube.testing.console import start_cluster_console
    from llmkube.testing.controlplane import ControlPlane
    from llmkube.testing.manifests import training_job_manifest

    root = Path(__file__).parents[1]
    with ControlPlane.start() as plane:
        plane.install_crds(sorted((root / "crds").glob("*.yaml")))
        listing = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [training_job_manifest(f"job-{i:04d}") for i in range(jobs)],
        }
        started = time.perf_counter()
        created = plane.kubectl("apply", "-n", "default", "-f", "-", input=json.dumps(listing))
        assert created.returncode == 0, created.stderr
        print(f"created {jobs} LLMTrainingJobs in {time.perf_counter() - started:.1f}s")
        console, base = start_cluster_console(plane.admin.kubeconfig, plane.workdir, {})
        try:
            headers = {"Authorization": f"Bearer {plane.admin.token}"}
            with httpx.Client(timeout=60, headers=headers) as client:
                samples = measure(
                    client,
                    {
                        "floor (/healthz)": f"{base}/healthz",
                        f"jobs page ({jobs} jobs)": f"{base}/jobs",
                        "jobs page, filtered": f"{base}/jobs?q=job-0&phase=Pending",
                    },
                    requests,
                )
        finally:
            console.stop()
    report(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--cluster", action="store_true", help="the --kubernetes console")
    args = parser.parse_args()
    if args.cluster:
        cluster(args.jobs, args.requests)
        return

    data = Path(tempfile.mkdtemp(prefix="llmkube-console-bench-"))
    started = time.perf_counter()
    for i in range(args.jobs):  # a history of finished runs, 1 in 100 still running
        phase = "Running" if i % 100 == 0 else "Succeeded"
        write_local_run(data, f"job-{i:04d}", steps=50, eval_every=25, phase=phase)
    output = write_local_run(data, "big", steps=args.rows, eval_every=1000)
    print(
        f"wrote {args.jobs + 1} runs ({args.rows:,} rows in the big one) in "
        f"{time.perf_counter() - started:.1f}s to {data}"
    )
    assert len((output / "metrics.jsonl").read_text().splitlines()) >= args.rows

    port = free_port()
    log = (data / "console.log").open("wb")
    console = subprocess.Popen(
        [sys.executable, "-m", "llmkube.cli.main", "console", "--port", str(port)],
        env={**os.environ, "LLMKUBE_DATA_DIR": str(data)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return bool(urllib.request.urlopen(f"{base}/healthz", timeout=1).status == 200)
            except OSError:
                return False

        wait_until(up, timeout=60, what="the console")
        with httpx.Client(timeout=60) as client:
            samples = measure(
                client,
                {
                    "floor (/healthz)": f"{base}/healthz",
                    f"jobs page ({args.jobs + 1} jobs)": f"{base}/jobs",
                    "jobs page, filtered": f"{base}/jobs?q=job-0&phase=Running",
                    f"job page ({args.rows:,} rows)": f"{base}/jobs/local/big",
                },
                args.requests,
            )
        delays = event_delay(base, output / "metrics.jsonl", args.rows, args.events)
    finally:
        console.terminate()
        console.wait(10)
    report(samples)
    print(
        f"\nlive chart event after a new metrics line: p50 {statistics.median(delays):.2f} s, "
        f"max {max(delays):.2f} s over {len(delays)} (goal ≤ 2 s)"
    )


if __name__ == "__main__":
    main()
