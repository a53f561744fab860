"""The console's pages and API over a local data folder written as `llmkube run` writes it,
through Starlette's test client (the browser tests drive the same app in Chromium)."""

import asyncio
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmkube.api.tuning import TrialRecord
from llmkube.console import sse
from llmkube.console.app import PAGE_SIZE, create_app
from llmkube.console.csrf import CSRF_HEADER, CsrfTokens
from llmkube.console.formatting import MISSING, duration
from llmkube.console.local_source import LocalSource
from llmkube.local.run_state import STATE_FILE, read_state, write_state
from llmkube.testing.console import write_local_run, write_local_search
from tests.commands import llmkube


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(LocalSource(tmp_path)))


def _csrf_token(page: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', page)
    assert match, page[:500]
    return match.group(1)


def test_the_jobs_page_pages_and_filters_on_the_server(tmp_path: Path, client: TestClient) -> None:
    for i in range(120):
        phase = "Succeeded" if i % 3 == 0 else "Running"
        write_local_run(
            tmp_path,
            f"run-{i:03d}",
            steps=5,
            phase=phase,
            started_at=f"2026-11-30T12:{i // 60:02d}:{i % 60:02d}+00:00",
        )
    first = client.get("/jobs")
    assert first.status_code == 200
    assert first.text.count("<tr data-job=") == PAGE_SIZE
    assert '<span class="count">120</span>' in first.text
    assert 'data-job="local/run-119"' in first.text  # newest first
    assert "page 1 of 3" in first.text
    last = client.get("/jobs", params={"page": 3})
    assert last.text.count("<tr data-job=") == 20
    assert 'data-job="local/run-000"' in last.text
    filtered = client.get("/jobs", params={"q": "run-01", "phase": "Succeeded"})
    names = re.findall(r'data-job="local/([^"]+)"', filtered.text)
    assert names == ["run-018", "run-015", "run-012"]
    assert client.get("/jobs", params={"page": 0}).status_code == 422


def test_a_job_page_embeds_every_point_of_a_short_run(tmp_path: Path, client: TestClient) -> None:
    write_local_run(tmp_path, "short", steps=30, eval_every=10)
    page = client.get("/jobs/local/short")
    assert page.status_code == 200
    embedded = re.search(r'<script type="application/json" id="curves">(.*?)</script>', page.text)
    assert embedded
    curves = json.loads(embedded.group(1))
    assert len(curves["train_loss"]["steps"]) == 30
    assert curves["eval_loss"]["steps"] == [10, 20, 30]
    assert curves["last_step"] == 30
    assert page.text.count('class="sample"') == 3
    assert "training.learningRate" in page.text


def test_a_long_run_is_thinned_on_the_server(tmp_path: Path, client: TestClient) -> None:
    write_local_run(tmp_path, "long", steps=20_000)
    curves = client.get("/jobs/local/long/curves").json()
    # A falling curve's buckets keep their first and last point: 2 of the 4 a bucket may.
    assert 900 < len(curves["train_loss"]["steps"]) <= 2000
    assert curves["train_loss"]["steps"][-1] == 20_000


def test_compare_puts_runs_side_by_side_and_marks_what_differs(
    tmp_path: Path, client: TestClient
) -> None:
    write_local_run(tmp_path, "slow", steps=10, learning_rate=1e-4)
    write_local_run(tmp_path, "fast", steps=10, learning_rate=1e-2)
    page = client.get("/compare", params=[("run", "local/slow"), ("run", "local/fast")])
    assert page.status_code == 200
    row = re.search(r'<tr class="differs"><th>training.learningRate</th>(.*?)</tr>', page.text)
    assert row, page.text
    assert re.findall(r"<td>(.*?)</td>", row.group(1)) == ["0.0001", "0.01"]
    assert "<tr ><th>training.batchSize</th>" in page.text  # same in both: not marked
    curves = json.loads(
        re.search(r'id="compare-curves">(.*?)</script>', page.text).group(1)  # type: ignore[union-attr]
    )
    assert sorted(curves) == ["local/fast", "local/slow"]
    missing = client.get("/compare", params={"run": "local/nope"})
    assert missing.status_code == 404
    assert "no training job local/nope" in missing.text


def test_an_unknown_job_is_a_404_page(client: TestClient) -> None:
    answer = client.get("/jobs/local/nope")
    assert answer.status_code == 404
    assert "no training job local/nope" in answer.text


def test_a_post_needs_the_pages_csrf_token(tmp_path: Path, client: TestClient) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    refused = client.post("/api/deployments/local/chat/chat", json=body)
    assert refused.status_code == 403
    assert CSRF_HEADER in refused.json()["error"]["message"]
    wrong = client.post(
        "/api/deployments/local/chat/chat", json=body, headers={CSRF_HEADER: "0" * 64}
    )
    assert wrong.status_code == 403
    token = _csrf_token(client.get("/jobs").text)  # the session cookie comes with the page
    accepted = client.post(
        "/api/deployments/local/chat/chat", json=body, headers={CSRF_HEADER: token}
    )
    assert accepted.status_code == 404  # past the CSRF check: there is no such deployment
    assert accepted.json() == {"error": {"message": "no deployment local/chat"}}
    other_browser = TestClient(client.app)
    other_browser.get("/jobs")
    stolen = other_browser.post(
        "/api/deployments/local/chat/chat", json=body, headers={CSRF_HEADER: token}
    )
    assert stolen.status_code == 403  # a token is good only with its own session


def test_pages_forbid_foreign_scripts_and_framing(client: TestClient) -> None:
    headers = client.get("/jobs").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "samesite=strict" in headers["set-cookie"].lower()
    assert "httponly" in headers["set-cookie"].lower()


def test_a_deployment_that_does_not_serve_yet_says_so(tmp_path: Path, client: TestClient) -> None:
    from llmkube.api.runconfig import ServeRunConfig, StorageConfig

    folder = tmp_path / "serve" / "chat"
    folder.mkdir(parents=True)
    write_state(folder, "Starting")
    config = ServeRunConfig.model_validate(
        {
            "deployment": {"name": "chat"},
            "modelUri": "file:///models/chat/model",
            "replicas": 1,
            "gpusPerReplica": 0,
            "cpusPerReplica": 1,
            "serving": {},
            "storage": StorageConfig().model_dump(by_alias=True),
        }
    )
    (folder / "serve.json").write_text(config.model_dump_json(by_alias=True))
    listing = client.get("/deployments")
    assert 'data-deployment="local/chat"' in listing.text
    assert "Playground" not in listing.text  # nothing to talk to yet
    token = _csrf_token(listing.text)
    answer = client.post(
        "/api/deployments/local/chat/completions",
        json={"model": "chat", "prompt": "x"},
        headers={CSRF_HEADER: token},
    )
    assert answer.status_code == 409
    assert "not serving yet (phase Starting)" in answer.json()["error"]["message"]


def test_a_running_state_whose_process_is_gone_reads_as_stopped(tmp_path: Path) -> None:
    state = write_state(tmp_path, "Running")
    raw = json.loads((tmp_path / STATE_FILE).read_text())
    (tmp_path / STATE_FILE).write_text(json.dumps({**raw, "pid": 2**22 + 1}))  # above pid_max
    read = read_state(tmp_path)
    assert read is not None
    assert (read.phase, read.message) == ("Stopped", "llmkube run is no longer running")
    assert state.phase == "Running"


def test_events_carry_multi_line_data_and_are_sent_only_on_change() -> None:
    assert sse.event("rows", "<tr>\n</tr>") == "event: rows\ndata: <tr>\ndata: </tr>\n\n"
    values = iter(["a", "a", "b"])

    async def first_two() -> list[str]:
        stream = sse.on_change(lambda: [("x", next(values))], poll_seconds=0)
        return [await anext(stream), await anext(stream)]

    assert asyncio.run(first_two()) == [sse.event("x", "a"), sse.event("x", "b")]


def test_durations_read_as_people_say_them() -> None:
    durations = [duration(s) for s in (None, 42.7, 185, 3720)]
    assert durations == [MISSING, "42s", "3m 05s", "1h 02m"]


def test_csrf_tokens_belong_to_one_secret() -> None:
    ours, theirs = CsrfTokens(b"1" * 32), CsrfTokens(b"2" * 32)
    assert ours.valid("session", ours.token("session"))
    assert not ours.valid("session", theirs.token("session"))
    assert not ours.valid(None, ours.token("session"))


def test_a_console_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = llmkube("console", "--port", str(port), env={"LLMKUBE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "try --port" in result.stderr


def test_a_search_lists_its_trials_best_first(tmp_path: Path, client: TestClient) -> None:
    def trial(name: str, state: str, rate: float, metric: float | None, **extra: Any) -> Any:
        return TrialRecord(
            trial=name,
            state=state,  # type: ignore[arg-type]
            params={"training.learningRate": rate, "training.batchSize": 8},
            metric=metric,
            step=40 if state == "succeeded" else 10,
            total_steps=40,
            **extra,
        )

    write_local_search(
        tmp_path,
        "sweep",
        [
            trial("a-00000", "stopped_early", 0.0001, 5.2),
            trial("a-00001", "succeeded", 0.002, 3.4),
            trial("a-00002", "failed", 0.009, None, error="DataError: no files at s3://x"),
            trial("a-00003", "succeeded", 0.005, 3.1),
            trial("a-00004", "running", 0.001, 4.0),
        ],
    )
    listing = client.get("/searches")
    assert listing.status_code == 200
    assert 'href="/searches/local/sweep"' in listing.text
    assert "4/5 (1 running)" in listing.text
    page = client.get("/searches/local/sweep")
    assert page.status_code == 200
    order = re.findall(r'data-trial="([^"]+)"', page.text)
    assert order == ["a-00003", "a-00001", "a-00000", "a-00004", "a-00002"]
    assert '<tr data-trial="a-00003" data-state="succeeded" class="best">' in page.text
    assert "<th>training.batchSize</th><th>training.learningRate</th>" in page.text
    assert "DataError: no files at s3://x" in page.text
    assert client.get("/searches/local/nothing").status_code == 404
