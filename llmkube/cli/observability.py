"""The Grafana dashboards and Prometheus alert rules llmkube ships, as data.

`llmkube dashboards -o DIR` writes them (dashboards/ and the chart's copies are generated from
here; a test keeps them in sync), and a test runs every expression against a real Prometheus
scraping the real operator, training and serving runtimes. Only metric names the code exports:
the operator's own (`llmkube_*`) and the runtimes' through Ray (`ray_llmkube_*`).
"""

from dataclasses import dataclass
from typing import Any

from llmkube.api.contract import (
    ADAPTERS_LOADED,
    BATCH_SIZE,
    EVAL_LOSS,
    GENERATED_TOKENS,
    INTER_TOKEN_LATENCY,
    PROMPT_TOKENS,
    QUEUE_DEPTH,
    REQUEST_DURATION,
    REQUESTS,
    REQUESTS_IN_FLIGHT,
    TIME_TO_FIRST_TOKEN,
    TRAIN_LOSS,
    TRAIN_STEP,
    TRAIN_TOKENS_PER_SECOND,
    exported,
)

# Grafana template variables, and what the test puts in their place.
VARIABLES = {"$job": ".+", "$search": ".+", "$deployment": ".+", "$model": ".+"}


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]
    """(legend, PromQL) pairs."""


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    """The measured value; the rule fires when `expr comparison` holds."""
    comparison: str
    duration: str
    summary: str
    severity: str = "warning"

    @property
    def rule(self) -> str:
        return f"{self.expr} {self.comparison}"


def _quantiles(metric: str, selector: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            f"p{int(q * 100)}",
            f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{selector}}}[1m])))",
        )
        for q in (0.5, 0.95, 0.99)
    )


TRAIN = 'training_job=~"$job"'
SEARCH = 'tuning_job=~"$search"'
SERVE = 'deployment=~"$deployment"'
# Request and token series carry the model id asked for: the deployment's own, its base or an
# adapter (llmkube/runtime/serving/metrics.py).
PER_MODEL = 'deployment=~"$deployment",model=~"$model"'

TRAINING_PANELS = (
    Panel(
        "Training loss",
        "none",
        (("{{training_job}}", f"max by (training_job) ({exported(TRAIN_LOSS)}{{{TRAIN}}})"),),
    ),
    Panel(
        "Validation loss",
        "none",
        (("{{training_job}}", f"max by (training_job) ({exported(EVAL_LOSS)}{{{TRAIN}}})"),),
    ),
    Panel(
        "Training throughput",
        "tokens/s",
        (
            (
                "{{training_job}}",
                f"max by (training_job) ({exported(TRAIN_TOKENS_PER_SECOND)}{{{TRAIN}}})",
            ),
        ),
    ),
    Panel(
        "Progress (optimizer steps)",
        "none",
        (("{{training_job}}", f"max by (training_job) ({exported(TRAIN_STEP)}{{{TRAIN}}})"),),
    ),
    Panel(
        "Training jobs by phase", "none", (("{{phase}}", "sum by (phase) (llmkube_trainingjobs)"),)
    ),
    Panel(
        "Searches: trials by state",
        "none",
        (
            (
                "{{tuning_job}} {{state}}",
                f"sum by (tuning_job, state) (llmkube_tuning_trials{{{SEARCH}}})",
            ),
        ),
    ),
    Panel(
        "Searches: objective of the best trial",
        "none",
        (
            (
                "{{tuning_job}} {{metric}}",
                f"max by (tuning_job, metric) (llmkube_tuning_best_metric{{{SEARCH}}})",
            ),
        ),
    ),
    Panel(
        "Operator reconciles",
        "ops",
        (
            (
                "{{kind}} {{result}}",
                "sum by (kind, result) (rate(llmkube_operator_reconcile_total[5m]))",
            ),
        ),
    ),
)

SERVING_PANELS = (
    Panel(
        "Requests by status",
        "reqps",
        (
            (
                "{{status}}",
                f"sum by (status) (rate({exported(REQUESTS)}{{{PER_MODEL}}}[1m]))",
            ),
        ),
    ),
    Panel(
        "Error ratio (non-200)",
        "percentunit",
        (
            (
                "errors",
                f'sum(rate({exported(REQUESTS)}{{{PER_MODEL},status!="200"}}[1m])) / '
                f"sum(rate({exported(REQUESTS)}{{{PER_MODEL}}}[1m]))",
            ),
        ),
    ),
    Panel(
        "Time to first token",
        "s",
        _quantiles(exported(TIME_TO_FIRST_TOKEN), PER_MODEL),
    ),
    Panel(
        "Inter-token latency",
        "s",
        _quantiles(exported(INTER_TOKEN_LATENCY), PER_MODEL),
    ),
    Panel(
        "Request duration",
        "s",
        _quantiles(exported(REQUEST_DURATION), PER_MODEL),
    ),
    Panel(
        "Tokens per second",
        "tokens/s",
        (
            ("generated", f"sum(rate({exported(GENERATED_TOKENS)}{{{PER_MODEL}}}[1m]))"),
            ("prompt", f"sum(rate({exported(PROMPT_TOKENS)}{{{PER_MODEL}}}[1m]))"),
        ),
    ),
    Panel(
        "Generated tokens per second, by model (base and adapters)",
        "tokens/s",
        (
            (
                "{{model}}",
                f"sum by (model) (rate({exported(GENERATED_TOKENS)}{{{PER_MODEL}}}[1m]))",
            ),
        ),
    ),
    Panel(
        "LoRA adapters loaded (per replica)",
        "none",
        (("{{WorkerId}}", f"max by (WorkerId) ({exported(ADAPTERS_LOADED)}{{{SERVE}}})"),),
    ),
    Panel(
        "In flight and queued",
        "none",
        (
            ("in flight", f"sum({exported(REQUESTS_IN_FLIGHT)}{{{SERVE}}})"),
            ("queued", f"sum({exported(QUEUE_DEPTH)}{{{SERVE}}})"),
        ),
    ),
    Panel(
        "Batch size (per replica)",
        "none",
        (("{{WorkerId}}", f"max by (WorkerId) ({exported(BATCH_SIZE)}{{{SERVE}}})"),),
    ),
    Panel(
        "Replicas",
        "none",
        (
            ("ready", f"sum(llmkube_deployment_ready_replicas{{{SERVE}}})"),
            ("desired", f"sum(llmkube_deployment_desired_replicas{{{SERVE}}})"),
            ("max (autoscaler)", f"sum(llmkube_deployment_max_replicas{{{SERVE}}})"),
        ),
    ),
    Panel(
        "Autoscaler decisions",
        "none",
        (
            (
                "{{direction}}",
                "sum by (direction) (increase(llmkube_autoscaler_decisions_total[10m]))",
            ),
        ),
    ),
)

ALERTS = (
    Alert(
        "LLMKubeTrainingJobFailed",
        'sum(llmkube_trainingjobs{phase="Failed"})',
        "> 0",
        "1m",
        "An LLMTrainingJob failed; `kubectl get ltj -A` and the job's conditions say why.",
        "critical",
    ),
    Alert(
        "LLMKubeDeploymentDegraded",
        'sum(llmkube_deployments{phase=~"Degraded|Failed"})',
        "> 0",
        "5m",
        "An LLMDeployment is degraded or failed; `kubectl describe llmd` shows its conditions.",
    ),
    Alert(
        "LLMKubeHighTimeToFirstToken",
        "histogram_quantile(0.95, sum by (namespace, deployment, le) "
        f"(rate({exported(TIME_TO_FIRST_TOKEN)}_bucket[5m])))",
        "> 2",
        "10m",
        "p95 time to first token of {{ $labels.deployment }} is above 2 s; add replicas or "
        "lower serving.maxBatchSize.",
    ),
    Alert(
        "LLMKubeAutoscalerAtMax",
        "llmkube_deployment_desired_replicas - on (namespace, deployment) "
        "llmkube_deployment_max_replicas",
        ">= 0",
        "15m",
        "{{ $labels.deployment }} has run at autoscaling.maxReplicas for 15 minutes; raise it "
        "if latency suffers.",
    ),
)


def _grafana_panel(index: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": panel.title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + n), "expr": expr, "legendFormat": legend}
            for n, (legend, expr) in enumerate(panel.targets)
        ],
    }


def _variable(name: str, label: str, metric: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": f"label_values({metric}, {label})", "refId": name},
        "definition": f"label_values({metric}, {label})",
        "includeAll": True,
        "multi": True,
        "allValue": ".+",
        "refresh": 2,
    }


def dashboard(
    uid: str, title: str, panels: tuple[Panel, ...], *variables: dict[str, Any]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["llmkube"],
        "schemaVersion": 39,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                *variables,
            ]
        },
        "panels": [_grafana_panel(index, panel) for index, panel in enumerate(panels)],
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → Grafana dashboard JSON."""
    return {
        "llmkube-training.json": dashboard(
            "llmkube-training",
            "llmkube / training",
            TRAINING_PANELS,
            _variable("job", "training_job", exported(TRAIN_STEP)),
            _variable("search", "tuning_job", "llmkube_tuning_trials"),
        ),
        "llmkube-serving.json": dashboard(
            "llmkube-serving",
            "llmkube / serving",
            SERVING_PANELS,
            _variable("deployment", "deployment", exported(REQUESTS)),
            _variable("model", "model", exported(REQUESTS)),
        ),
    }


def alert_rules() -> list[dict[str, Any]]:
    """The `groups[0].rules` of the chart's PrometheusRule."""
    return [
        {
            "alert": alert.name,
            "expr": alert.rule,
            "for": alert.duration,
            "labels": {"severity": alert.severity},
            "annotations": {"summary": alert.summary},
        }
        for alert in ALERTS
    ]


def _filled(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def measured_expressions() -> list[str]:
    """Every dashboard query and every alert's measured value, variables filled in: each must
    return series once the system runs."""
    panels = (*TRAINING_PANELS, *SERVING_PANELS)
    found = [expr for panel in panels for _, expr in panel.targets]
    return [_filled(expr) for expr in [*found, *(alert.expr for alert in ALERTS)]]


def alert_expressions() -> list[str]:
    """The alert rules as Prometheus evaluates them (empty while nothing is wrong)."""
    return [alert.rule for alert in ALERTS]
