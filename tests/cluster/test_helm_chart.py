"""The chart lints, renders, validates its values, and is accepted by the real apiserver."""

import subprocess

from llmkube.testing.controlplane import ControlPlane
from tests.cluster.conftest import CHART, OPERATOR_NAMESPACE, control_plane_helm, render_chart


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(control_plane_helm()), *args], capture_output=True, text=True, check=False
    )


def test_the_chart_lints() -> None:
    result = helm(
        "lint", str(CHART), "--strict", "--set", "serviceMonitor.enabled=true,alerts.enabled=true"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rendered_object_is_accepted_by_the_apiserver(control_plane: ControlPlane) -> None:
    rendered = render_chart(
        control_plane,
        "serviceMonitor.enabled=true",
        "alerts.enabled=true",
        "watchNamespaces={team-a,team-b}",
        "prometheusUrl=http://prometheus.monitoring:9090",
    )
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE)
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    kinds = {line.split(" ", 1)[0].split("/")[0] for line in result.stdout.splitlines()}
    assert kinds >= {
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "deployment.apps",
        "service",
        "servicemonitor.monitoring.coreos.com",
        "prometheusrule.monitoring.coreos.com",
        "configmap",
    }
    assert 'value: "team-a,team-b"' in rendered
    assert "configmap/llmkube-serving-dashboard" in result.stdout
    assert "configmap/llmkube-training-dashboard" in result.stdout
    assert "{{ $labels.deployment }}" in rendered  # alert templates reach Prometheus as written


def test_the_operator_pod_is_locked_down(control_plane: ControlPlane) -> None:
    rendered = render_chart(control_plane)
    for setting in (
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "path: /healthz",
    ):
        assert setting in rendered, setting


def test_bad_values_are_refused_by_the_schema() -> None:
    for bad, says in (
        ("metricsPort=0", "/metricsPort"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("prometheusUrl=prometheus:9090", "/prometheusUrl"),
    ):
        result = helm("template", "x", str(CHART), "--set", bad)
        assert result.returncode != 0, bad
        assert says in result.stderr, result.stderr
