"""The GitOps examples: the workloads folder builds with kustomize and the real apiserver
accepts what it renders; the Argo CD and Flux objects are well-formed YAML."""

from pathlib import Path

import yaml

from llmkube.testing.controlplane import ControlPlane

GITOPS = Path(__file__).parents[2] / "examples" / "gitops"


def test_workloads_render_and_are_accepted(control_plane: ControlPlane, namespace: str) -> None:
    built = control_plane.kubectl("kustomize", str(GITOPS / "workloads"))
    assert built.returncode == 0, built.stderr
    applied = control_plane.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=built.stdout
    )
    assert applied.returncode == 0, applied.stderr
    assert "llmtrainingjob.llmkube.io/nightly" in applied.stdout


def test_argo_and_flux_objects_are_well_formed() -> None:
    kinds = {
        doc["kind"]
        for path in GITOPS.rglob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    }
    assert {"Application", "GitRepository", "HelmRelease", "Kustomization"} <= kinds
    argo = yaml.safe_load((GITOPS / "argocd-application.yaml").read_text())
    assert {"group": "llmkube.io", "kind": "LLMDeployment", "jsonPointers": ["/spec/replicas"]} in (
        argo["spec"]["ignoreDifferences"]
    )
    assert "RespectIgnoreDifferences=true" in argo["spec"]["syncPolicy"]["syncOptions"]
