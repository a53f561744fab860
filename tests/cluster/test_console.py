"""`llmkube console --kubernetes` with the chart's read-only ServiceAccount, in Chromium, behind
each person's own Kubernetes identity: a ServiceAccount allowed to read one namespace sees the
job there, its progress move live and its loss curve from MinIO; one without rights sees
nothing and is told nothing exists; a bad token is refused; a POST without the page's CSRF token
is refused."""

import io
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page

from llmkube.api.tuning import TRIALS_FILE, TrialRecord
from llmkube.testing.browser import chromium, page_errors, screenshot
from llmkube.testing.console import metrics_lines, start_cluster_console
from llmkube.testing.controlplane import ControlPlane
from llmkube.testing.minio import MinioServer
from llmkube.testing.operator import OperatorProcess
from tests.cluster.conftest import OPERATOR_NAMESPACE, RBAC_DENIAL, RELEASE, render_chart
from tests.cluster.helpers import (
    apply,
    cpu_job,
    credentials_secret,
    eventually,
    status_of,
    wait_rayjob,
)

STEPS_LOGGED = 100


def _reader_role(namespace: str) -> list[dict[str, Any]]:
    """What a team member gets: read the llmkube objects and Events of their namespace."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "llmkube-reader", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["llmkube.io"],
                    "resources": ["llmtrainingjobs", "llmtuningjobs", "llmdeployments"],
                    "verbs": ["get", "list"],
                },
                {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "alice-reads", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "llmkube-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": namespace}],
        },
    ]


def _token(cp: ControlPlane, namespace: str, account: str) -> str:
    created = cp.kubectl("create", "serviceaccount", account, "-n", namespace)
    assert created.returncode == 0, created.stderr
    token = cp.kubectl("create", "token", account, "-n", namespace)
    assert token.returncode == 0, token.stderr
    return token.stdout.strip()


def _signed_in(browser: Browser, url: str, token: str) -> Page:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/jobs")
    assert page.url == f"{url}/login"  # no token, no page
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_url(f"{url}/jobs")
    return page


def test_the_console_shows_each_person_what_rbac_lets_them_see(
    control_plane: ControlPlane,
    fleet_namespace: str,
    operator: OperatorProcess,
    minio: MinioServer,
    bucket: str,
    tmp_path: Path,
) -> None:
    namespace = fleet_namespace
    rendered = render_chart(control_plane, "console.enabled=true")
    applied = control_plane.kubectl("apply", "-f", "-", input=rendered)
    assert applied.returncode == 0, applied.stderr
    console_identity = control_plane.service_account_kubeconfig(
        OPERATOR_NAMESPACE, f"{RELEASE}-console"
    )
    alice, mallory = (
        _token(control_plane, namespace, "alice"),
        _token(control_plane, namespace, "mallory"),
    )
    apply(control_plane, namespace, *_reader_role(namespace))

    storage = {"endpoint": minio.endpoint, "insecure": True, "credentialsSecret": {"name": "s3"}}
    job = cpu_job("watched", storage=storage, output=f"s3://{bucket}/watched/")
    apply(control_plane, namespace, credentials_secret("s3", minio.env), job)

    # What the training runtime writes as it goes (no Ray runs in this tier).
    def put(key: str, text: str) -> None:
        data = text.encode()
        minio.client().put_object(bucket, f"watched/{key}", io.BytesIO(data), len(data))

    def progress(step: int) -> None:
        put("progress.json", f'{{"step": {step}, "total_steps": 1000, "updated_at": "t"}}')

    put("metrics.jsonl", metrics_lines(STEPS_LOGGED, eval_every=50))
    progress(STEPS_LOGGED)
    wait_rayjob(control_plane, namespace, "watched", "Running")  # KubeRay's own doing

    def reported() -> None:
        status = status_of(control_plane, "ltj", "watched", namespace)
        assert status.get("progress", {}).get("step") == STEPS_LOGGED, status

    eventually(reported)
    search = {
        "apiVersion": "llmkube.io/v1alpha1",
        "kind": "LLMTuningJob",
        "metadata": {"name": "sweep"},
        "spec": {
            "template": {**job["spec"], "output": f"s3://{bucket}/sweep/"},
            "searchSpace": {"training.batchSize": {"type": "choice", "values": [4, 8]}},
            "trials": {"max": 2},
        },
    }
    apply(control_plane, namespace, search)
    # What the search runtime writes (llmkube.runtime.tuning.recorder).
    trials = [
        TrialRecord(
            trial="t-00000", state="succeeded", params={"training.batchSize": 4}, metric=3.5
        ),
        TrialRecord(
            trial="t-00001", state="succeeded", params={"training.batchSize": 8}, metric=3.2
        ),
    ]
    data = "".join(t.model_dump_json() + "\n" for t in trials).encode()
    minio.client().put_object(bucket, f"sweep/{TRIALS_FILE}", io.BytesIO(data), len(data))

    console, url = start_cluster_console(console_identity, tmp_path, minio.env)
    try:
        with chromium() as browser:
            page = _signed_in(browser, url, alice)
            errors = page_errors(page)
            row = f'tr[data-job="{namespace}/watched"]'
            assert page.get_attribute(f"{row} .steps", "data-step") == "100"
            assert "system:serviceaccount:" in page.inner_text("#viewer")
            progress(250)  # the operator reads it, the console's stream shows it
            page.wait_for_selector(f'{row} .steps[data-step="250"]', timeout=60_000)
            screenshot(page, "console-cluster-jobs")

            page.goto(f"{url}/jobs/{namespace}/watched")
            page.wait_for_function("() => window.llmkubeConsole && llmkubeConsole.charts.loss")
            points = page.evaluate(
                "llmkubeConsole.charts.loss.data[1].filter((v) => v !== null).length"
            )
            assert points == STEPS_LOGGED  # metrics.jsonl from MinIO, every line
            assert page.locator("#evaluations tbody tr").count() == 2
            assert "Running" in page.inner_text("#summary")
            assert page.locator("table.events tr").count() > 1  # the operator's Events
            screenshot(page, "console-cluster-job")

            page.goto(f"{url}/searches")
            page.click(f'a[href="/searches/{namespace}/sweep"]')
            page.wait_for_selector("#trials tr[data-trial]")
            shown = page.eval_on_selector_all(
                "#trials tr[data-trial]", "rows => rows.map(r => r.dataset.trial)"
            )
            assert shown == ["t-00001", "t-00000"]  # trials.jsonl from MinIO, best first

            refused = page.request.post(
                f"{url}/api/deployments/{namespace}/chat/chat",
                data={"model": "chat", "messages": []},
            )
            assert refused.status == 403
            assert "X-CSRF-Token" in refused.json()["error"]["message"]
            assert errors == [], errors

            # Mallory may read nothing: an empty list, and the job reads as missing.
            nosy = _signed_in(browser, url, mallory)
            assert nosy.locator("tr[data-job]").count() == 0
            assert "No training jobs yet" in nosy.inner_text("#job-rows")
            missing = nosy.goto(f"{url}/jobs/{namespace}/watched")
            assert missing is not None
            assert missing.status == 404
            curves = nosy.request.get(f"{url}/jobs/{namespace}/watched/curves")
            assert curves.status == 404
            hidden = nosy.request.get(f"{url}/searches/{namespace}/sweep")
            assert hidden.status == 404
            screenshot(nosy, "console-cluster-no-rights")

            # A token the cluster does not know is refused at sign-in.
            stranger = browser.new_page()
            stranger.goto(f"{url}/login")
            stranger.fill("#token", "not-a-token")
            stranger.click("#sign-in")
            assert "does not accept this token" in stranger.inner_text("#login-error")
            api = stranger.request.get(f"{url}/api/deployments/{namespace}/chat/models")
            assert api.status == 401
    finally:
        console.stop()
    log = console.log_path.read_text()
    assert not RBAC_DENIAL.search(log), log  # the chart's ClusterRole covers what it reads
    assert "Traceback" not in log, log
