"""The `llmkube` command's crds and validate verbs, run as a user would."""

from pathlib import Path

import yaml

from llmkube.api.crd import all_crds
from tests.bad_manifests import corpus
from tests.commands import llmkube

ROOT = Path(__file__).parents[2]


def test_crds_prints_every_crd() -> None:
    result = llmkube("crds")
    assert result.returncode == 0, result.stderr
    printed = list(yaml.safe_load_all(result.stdout))
    assert printed == list(all_crds().values())


def test_crds_writes_files(tmp_path: Path) -> None:
    assert llmkube("crds", "--output-dir", str(tmp_path)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(all_crds())


def test_validate_accepts_the_examples() -> None:
    result = llmkube("validate", "examples/")
    assert result.returncode == 0, result.stderr
    assert "LLMTrainingJob/shakespeare" in result.stdout
    assert "LLMDeployment/shakespeare" in result.stdout


def test_validate_reports_one_line_per_problem_and_fails() -> None:
    result = llmkube("validate", "--cluster", "tests/data/bad-manifests/")
    assert result.returncode == 1
    for bad in corpus():
        assert bad.llmkube_says in result.stderr, bad
    assert f"{len(corpus())} invalid document(s)" in result.stderr


def test_validate_notes_what_only_a_cluster_refuses_and_refuses_it_with_cluster() -> None:
    cluster_only = [bad for bad in corpus() if bad.cluster_only]
    assert len(cluster_only) >= 2
    for bad in cluster_only:
        local = llmkube("validate", str(bad.path))
        assert local.returncode == 0, local.stderr
        assert "on a cluster:" in local.stdout
        assert bad.llmkube_says in " ".join(local.stdout.split()), bad
        strict = llmkube("validate", "--cluster", str(bad.path))
        assert strict.returncode == 1
        assert bad.llmkube_says in strict.stderr, bad


def test_validate_missing_file_is_a_clear_error() -> None:
    result = llmkube("validate", "no/such/file.yaml")
    assert result.returncode == 2
    assert "no/such/file.yaml: no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_broken_yaml_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: LLMTrainingJob\nspec: [unclosed\n")
    result = llmkube("validate", str(broken))
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_bad_manifests_with_the_validate_messages() -> None:
    result = llmkube("run", "tests/data/bad-manifests/")
    assert result.returncode == 1
    for bad in corpus():
        assert (bad.llmkube_says in result.stderr) is not bad.cluster_only, bad
    assert "Traceback" not in result.stderr
