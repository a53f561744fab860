"""Create N LLMTrainingJobs against a real apiserver: the operator vs a perfect script.

Baseline ("perfect operator"): a script that makes only the API calls any operator must make per
job — create the CR, its ConfigMap and RayJob, one status patch — with C client threads.
llmkube: the same C threads create the N CRs; the operator (a real subprocess) does the rest.
Both are timed until every job has its RayJob and a first status. Printed: both times, their ratio
(goal <= 1.5x), end-to-end reconcile latency p50/p99 (CR created -> status visible), and the
operator's RSS with N objects (goal <= 200 MB).

`--fleet`: the same N jobs with KubeRay's real controller and the real kube-scheduler on a
simulated pool of `--nodes` kwok nodes (llmkube.testing.fleet), each side on a fresh control
plane. Baseline: the C threads create the N RayJobs directly (built as the operator builds them);
llmkube: they create the N LLMTrainingJobs. Both are timed until every Ray pod (a head and a
worker per job) is bound to a node. Printed: both times, their ratio (goal <= 1.2x), and the
operator's RSS at that scale (goal <= 200 MB).

    .venv/bin/python benchmarks/operator_scale.py [--jobs 1000] [--concurrency 16]
    .venv/bin/python benchmarks/operator_scale.py --fleet [--jobs 1000] [--nodes 200]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from llmkube.api import LLMTrainingJob
from llmkube.api.runconfig import training_run_config
from llmkube.operator.kube import CONFIGMAPS, RAYJOBS, TRAINING_JOBS, KubeApi
from llmkube.operator.training.builders import build_rayjob, build_run_configmap
from llmkube.testing.binaries import third_party_crds
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.fleet import Fleet, Pool
from llmkube.testing.manifests import training_job_manifest
from llmkube.testing.operator import OperatorProcess

ROOT = Path(__file__).parents[1]


def perfect_operator(api: KubeApi, namespace: str, names: list[str], concurrency: int) -> float:
    def one(name: str) -> None:
        created = api.create(TRAINING_JOBS, namespace, training_job_manifest(name))
        job = LLMTrainingJob.model_validate(created)
        api.create(CONFIGMAPS, namespace, build_run_configmap(job, training_run_config(job)))
        api.create(RAYJOBS, namespace, build_rayjob(job, default_image="bench"))
        status = {"status": {"phase": "Pending", "rayJobName": name, "observedGeneration": 1}}
        api.patch(TRAINING_JOBS, namespace, name, status, "status")

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - began


class StatusWatch(threading.Thread):
    """Records when each job's status first shows a phase, from a watch stream."""

    def __init__(self, kubeconfig: Path, namespace: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.api = client.CustomObjectsApi(config.new_client_from_config(str(kubeconfig)))  # type: ignore[no-untyped-call]
        self.namespace = namespace
        self.expected = expected
        self.first_status: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            self.api.list_namespaced_custom_object,
            "llmkube.io",
            "v1alpha1",
            self.namespace,
            "llmtrainingjobs",
        ):
            obj = event["object"]
            name = obj["metadata"]["name"]
            if (obj.get("status") or {}).get("phase") and name not in self.first_status:
                self.first_status[name] = time.perf_counter()
                if len(self.first_status) == self.expected:
                    self.done.set()
                    stream.stop()  # type: ignore[no-untyped-call]


def operator_run(
    plane: ControlPlane, api: KubeApi, namespace: str, names: list[str], concurrency: int
) -> tuple[float, list[float], int]:
    logs = Path(tempfile.mkdtemp(prefix="llmkube-bench-operator-"))
    operator = OperatorProcess(
        plane.admin.kubeconfig, logs, env={"LLMKUBE_NAMESPACES": namespace}
    ).start()
    try:
        watcher = StatusWatch(plane.admin.kubeconfig, namespace, len(names))
        watcher.start()
        time.sleep(1.0)  # let the watch establish before the clock starts
        created_at: dict[str, float] = {}

        def create(name: str) -> None:
            api.create(TRAINING_JOBS, namespace, training_job_manifest(name))
            created_at[name] = time.perf_counter()

        cpu_before = cpu_seconds_of(operator)
        began = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(create, names))
        if not watcher.done.wait(timeout=1800):
            sys.exit(f"only {len(watcher.first_status)} of {len(names)} jobs got a status")
        elapsed = max(watcher.first_status.values()) - began
        rayjobs = api.list(RAYJOBS, namespace)
        assert len(rayjobs) == len(names), f"{len(rayjobs)} RayJobs for {len(names)} jobs"
        latencies = sorted(watcher.first_status[n] - created_at[n] for n in names)
        rss_kb = rss_of(operator)
        print(f"operator CPU time during the run: {cpu_seconds_of(operator) - cpu_before:.1f} s")
    except BaseException:
        operator.stop()
        print(f"operator logs kept in {logs}", file=sys.stderr)
        raise
    operator.stop()
    shutil.rmtree(logs, ignore_errors=True)
    return elapsed, latencies, rss_kb


def rss_of(operator: OperatorProcess) -> int:
    assert operator.process is not None
    status = Path(f"/proc/{operator.process.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def cpu_seconds_of(operator: OperatorProcess) -> float:
    assert operator.process is not None
    fields = (
        Path(f"/proc/{operator.process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    )
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))]


class PodsBound(threading.Thread):
    """Records when the `expected`-th Ray pod is bound to a node, from a watch stream."""

    def __init__(self, kubeconfig: Path, namespace: str, expected: int) -> None:
        super().__init__(daemon=True)
        self.api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))  # type: ignore[no-untyped-call]
        self.namespace = namespace
        self.expected = expected
        self.bound: set[str] = set()
        self.all_bound_at = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        for event in stream.stream(  # type: ignore[no-untyped-call]
            self.api.list_namespaced_pod, self.namespace, label_selector="ray.io/is-ray-node=yes"
        ):
            pod = event["object"]
            if pod.spec.node_name and pod.metadata.name not in self.bound:
                self.bound.add(pod.metadata.name)
                if len(self.bound) == self.expected:
                    self.all_bound_at = time.perf_counter()
                    self.done.set()
                    stream.stop()  # type: ignore[no-untyped-call]


def fleet_run(
    names: list[str], nodes: int, concurrency: int, through_llmkube: bool
) -> tuple[float, int | None]:
    """Seconds from the first create to every Ray pod bound; the operator's RSS (llmkube)."""
    namespace = "bench"
    workdir = Path(tempfile.mkdtemp(prefix="llmkube-bench-fleet-"))
    pools = (Pool("cpu", nodes, 64, "256Gi"),)
    manifests = [training_job_manifest(name, resources={"gpusPerWorker": 0}) for name in names]
    with ControlPlane.start() as plane:
        plane.install_crds([*third_party_crds(), *sorted((ROOT / "crds").glob("*.yaml"))])
        plane.kubectl("create", "namespace", namespace)
        api = KubeApi.from_environment(
            pool_size=concurrency * 2, kubeconfig=str(plane.admin.kubeconfig)
        )
        with Fleet.start(plane, workdir, namespaces=[namespace], pools=pools, timeout=300):
            operator = None
            if through_llmkube:
                operator = OperatorProcess(
                    plane.admin.kubeconfig, workdir, env={"LLMKUBE_NAMESPACES": namespace}
                ).start()
            try:
                watcher = PodsBound(plane.admin.kubeconfig, namespace, 2 * len(names))
                watcher.start()
                time.sleep(1.0)  # let the watch establish before the clock starts

                def create(manifest: dict[str, Any]) -> None:
                    if through_llmkube:
                        api.create(TRAINING_JOBS, namespace, manifest)
                    else:
                        job = LLMTrainingJob.model_validate(
                            manifest
                            | {"metadata": {**manifest["metadata"], "namespace": namespace}}
                        )
                        rayjob = build_rayjob(job, default_image="bench")
                        del rayjob["metadata"]["ownerReferences"]  # no LLMTrainingJob owns it
                        api.create(RAYJOBS, namespace, rayjob)

                began = time.perf_counter()
                with ThreadPoolExecutor(concurrency) as pool:
                    list(pool.map(create, manifests))
                if not watcher.done.wait(timeout=3600):
                    sys.exit(f"only {len(watcher.bound)} of {2 * len(names)} Ray pods bound")
                rss_kb = rss_of(operator) if operator is not None else None
            finally:
                if operator is not None:
                    operator.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return watcher.all_bound_at - began, rss_kb


def fleet_main(jobs: int, nodes: int, concurrency: int) -> None:
    names = [f"job-{i:05d}" for i in range(jobs)]
    print(f"{jobs} jobs on {nodes} simulated nodes, {concurrency} client threads")
    baseline, _ = fleet_run(names, nodes, concurrency, through_llmkube=False)
    print(f"RayJobs created directly, until every Ray pod is bound:     {baseline:7.1f} s")
    elapsed, rss_kb = fleet_run(names, nodes, concurrency, through_llmkube=True)
    print(f"LLMTrainingJobs through llmkube, until every Ray pod is bound: {elapsed:7.1f} s")
    print(f"ratio llmkube / direct: {elapsed / baseline:.2f}x   (goal <= 1.2x)")
    assert rss_kb is not None
    print(f"operator RSS with {jobs} jobs: {rss_kb / 1024:.0f} MB   (goal <= 200 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fleet", action="store_true", help="with KubeRay and the scheduler")
    parser.add_argument("--nodes", type=int, default=200, help="simulated nodes (--fleet)")
    args = parser.parse_args()
    if args.fleet:
        fleet_main(args.jobs, args.nodes, args.concurrency)
        return
    names = [f"job-{i:05d}" for i in range(args.jobs)]

    with ControlPlane.start() as plane:
        plane.install_crds([*third_party_crds(), *sorted((ROOT / "crds").glob("*.yaml"))])
        for namespace in ("warm-up", "baseline", "operator"):
            plane.kubectl("create", "namespace", namespace)
        api = KubeApi.from_environment(
            pool_size=args.concurrency * 2, kubeconfig=str(plane.admin.kubeconfig)
        )
        version = plane.versions["kube-apiserver"]
        print(f"{args.jobs} LLMTrainingJobs, {args.concurrency} client threads, {version}")

        # Untimed warm-up, so neither side pays for a cold apiserver and etcd.
        warm = [f"warm-{i:03d}" for i in range(50)]
        perfect_operator(api, "warm-up", warm, args.concurrency)

        baseline = perfect_operator(api, "baseline", names, args.concurrency)
        print(f"perfect script (CR + ConfigMap + RayJob + status patch): {baseline:7.1f} s")
        elapsed, latencies, rss_kb = operator_run(plane, api, "operator", names, args.concurrency)
        print(f"llmkube operator (CRs created, until every job has a status): {elapsed:7.1f} s")
        print(f"ratio operator / perfect: {elapsed / baseline:.2f}x   (goal <= 1.5x)")
        print(
            f"reconcile latency (CR created -> status visible): "
            f"p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
            f"mean {statistics.fmean(latencies) * 1000:.0f} ms"
        )
        print(f"operator RSS with {args.jobs} jobs: {rss_kb / 1024:.0f} MB   (goal <= 200 MB)")


if __name__ == "__main__":
    main()
