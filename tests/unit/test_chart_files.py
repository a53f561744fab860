"""The Helm chart ships the same CRDs as crds/ (generated from the models)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("crd", sorted(p.name for p in (ROOT / "crds").glob("*.yaml")))
def test_chart_crds_match(crd: str) -> None:
    chart_copy = ROOT / "helm" / "llmkube" / "crds" / crd
    assert chart_copy.read_text() == (ROOT / "crds" / crd).read_text(), (
        f"helm/llmkube/crds/{crd} is stale: run llmkube crds -o helm/llmkube/crds"
    )


def test_chart_has_no_other_crds() -> None:
    chart = sorted(p.name for p in (ROOT / "helm" / "llmkube" / "crds").glob("*.yaml"))
    assert chart == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
