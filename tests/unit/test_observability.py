"""The shipped dashboards and alert rules are generated from llmkube/cli/observability.py."""

import json
import re
from pathlib import Path

import pytest
import yaml

from llmkube.cli import observability

ROOT = Path(__file__).parents[2]
COPIES = (ROOT / "dashboards", ROOT / "helm" / "llmkube" / "files" / "dashboards")
STALE = "stale: run `llmkube dashboards -o dashboards` and copy to helm/llmkube/files/"


@pytest.mark.parametrize("folder", COPIES)
def test_dashboard_files_are_generated(folder: Path) -> None:
    for name, board in observability.dashboards().items():
        assert json.loads((folder / name).read_text()) == board, f"{folder / name} is {STALE}"
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(observability.dashboards())


def test_alert_rules_are_generated() -> None:
    for path in (ROOT / "dashboards", ROOT / "helm" / "llmkube" / "files"):
        rules = yaml.safe_load((path / "prometheus-rules.yaml").read_text())
        assert rules == observability.alert_rules(), f"{path} is {STALE}"


def test_every_query_names_only_exported_metrics() -> None:
    exported = {
        # operator (prometheus-client)
        "llmkube_operator_reconcile_total",
        "llmkube_trainingjobs",
        "llmkube_deployments",
        "llmkube_autoscaler_decisions_total",
        "llmkube_deployment_ready_replicas",
        "llmkube_deployment_desired_replicas",
        "llmkube_deployment_max_replicas",
        "llmkube_tuning_trials",
        "llmkube_tuning_best_metric",
        # runtimes, through Ray's metrics agent
        "ray_llmkube_train_loss",
        "ray_llmkube_eval_loss",
        "ray_llmkube_train_tokens_per_second",
        "ray_llmkube_train_step",
        "ray_llmkube_requests_total",
        "ray_llmkube_time_to_first_token_seconds_bucket",
        "ray_llmkube_inter_token_latency_seconds_bucket",
        "ray_llmkube_request_duration_seconds_bucket",
        "ray_llmkube_generated_tokens_total",
        "ray_llmkube_prompt_tokens_total",
        "ray_llmkube_requests_in_flight",
        "ray_llmkube_queue_depth",
        "ray_llmkube_batch_size",
        "ray_llmkube_adapters_loaded",
    }
    for expr in observability.measured_expressions() + observability.alert_expressions():
        for name in re.findall(r"\b((?:ray_)?llmkube_[a-z_]+)\b", expr):
            assert name in exported, (name, expr)
