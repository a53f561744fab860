"""The chart lints, renders, validates its values, and is accepted by the real apiserver."""

import subprocess

import yaml

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
    for namespace in (OPERATOR_NAMESPACE, "team-a", "team-b"):
        control_plane.kubectl("create", "namespace", namespace)
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    kinds = {line.split(" ", 1)[0].split("/")[0] for line in result.stdout.splitlines()}
    assert kinds >= {
        "serviceaccount",
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
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


# Everything the operator may do, and nothing more: (apiGroup, resource, verb). An extra rule in
# the chart fails the test as surely as a missing one.
KOPF_DISCOVERY = {
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
}
WORKLOADS = {
    *(
        ("llmkube.io", kind, verb)
        for kind in ("llmtrainingjobs", "llmtuningjobs", "llmdeployments")
        for verb in ("get", "list", "watch")
    ),
    ("llmkube.io", "llmtrainingjobs/status", "patch"),
    ("llmkube.io", "llmtuningjobs/status", "patch"),
    ("llmkube.io", "llmtuningjobs/finalizers", "update"),
    ("llmkube.io", "llmdeployments/status", "patch"),
    ("llmkube.io", "llmdeployments/scale", "patch"),
    ("llmkube.io", "llmtrainingjobs/finalizers", "update"),
    ("llmkube.io", "llmdeployments/finalizers", "update"),
    *(
        ("", kind, verb)
        for kind in ("configmaps", "services")
        for verb in ("create", "get", "patch")
    ),
    ("", "secrets", "get"),
    ("", "events", "create"),
    ("", "pods", "list"),
    *(("networking.k8s.io", "networkpolicies", verb) for verb in ("create", "get", "patch")),
    *(
        ("ray.io", kind, verb)
        for kind in ("rayjobs", "rayservices")
        for verb in ("create", "get", "list", "watch", "patch")
    ),
    ("ray.io", "rayclusters", "get"),
    *(
        ("monitoring.coreos.com", "servicemonitors", verb)
        for verb in ("create", "get", "patch", "delete")
    ),
}


def granted(rendered: str) -> set[tuple[str, str, str, str, str]]:
    """(scope, namespace, apiGroup, resource, verb) for every rule the chart's roles grant, where
    scope is the role kind and namespace is '' for cluster-wide."""
    rules = set()
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] not in ("Role", "ClusterRole"):
            continue
        namespace = doc["metadata"].get("namespace", "")
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        rules.add((doc["kind"], namespace, group, resource, verb))
    return rules


def test_a_cluster_wide_operator_gets_exactly_what_it_uses(control_plane: ControlPlane) -> None:
    expected = {("ClusterRole", "", *rule) for rule in KOPF_DISCOVERY | WORKLOADS}
    assert granted(render_chart(control_plane)) == expected


def test_watching_namespaces_grants_roles_there_and_nothing_cluster_wide_beyond_discovery(
    control_plane: ControlPlane,
) -> None:
    rendered = render_chart(control_plane, "watchNamespaces={team-a,team-b}")
    expected = {("ClusterRole", "", *rule) for rule in KOPF_DISCOVERY} | {
        ("Role", namespace, *rule) for namespace in ("team-a", "team-b") for rule in WORKLOADS
    }
    assert granted(rendered) == expected
    bindings = [
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"].endswith("Binding")
    ]
    assert sorted((b["kind"], b["metadata"].get("namespace", "")) for b in bindings) == [
        ("ClusterRoleBinding", ""),
        ("RoleBinding", "team-a"),
        ("RoleBinding", "team-b"),
    ]


# The console only reads, and asks the apiserver about the people who sign in to it.
CONSOLE = {
    *(
        ("llmkube.io", kind, verb)
        for kind in ("llmtrainingjobs", "llmtuningjobs", "llmdeployments")
        for verb in ("get", "list")
    ),
    ("", "events", "list"),
    ("authentication.k8s.io", "tokenreviews", "create"),
    ("authorization.k8s.io", "subjectaccessreviews", "create"),
}


def test_the_console_is_off_by_default_and_only_reads_when_on(control_plane: ControlPlane) -> None:
    assert "llmkube-console" not in render_chart(control_plane)
    rendered = render_chart(control_plane, "console.enabled=true", "console.storageSecret=s3")
    docs = {
        (doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(rendered) if doc
    }
    role = yaml.safe_dump(docs[("ClusterRole", "llmkube-console")])
    assert granted(role) == {("ClusterRole", "", *rule) for rule in CONSOLE}
    pod = docs[("Deployment", "llmkube-console")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "llmkube-console"
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["args"][:3] == ["llmkube", "console", "--kubernetes"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}},
    } in container["env"]
    service = docs[("Service", "llmkube-console")]["spec"]
    assert service["ports"][0]["port"] == 9265
    assert service["selector"] == {
        "app.kubernetes.io/name": "llmkube-console",
        "app.kubernetes.io/instance": "llmkube",
    }
    dry_run = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert dry_run.returncode == 0, dry_run.stderr
