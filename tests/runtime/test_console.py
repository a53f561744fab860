"""The console `llmkube run` starts beside a run, in Chromium: the jobs page's progress moves
while a job trains, a job page's loss curve grows live and ends with every point of
metrics.jsonl, the compare page overlays two runs, and the playground streams an answer from
the served model. Screenshots of each page land in the test artifacts."""

import json
import re
from pathlib import Path
from typing import Any

import yaml
from playwright.sync_api import Page

from llmkube.testing.browser import chromium, page_errors, screenshot
from llmkube.testing.processes import free_port
from tests.runtime.local_run import Run, write_sample_data

ROOT = Path(__file__).parents[2]
FROM_SCRATCH = ROOT / "examples" / "from-scratch"
LIVE_STEPS = 80  # ~30 s of steps on 2 cores: long enough to watch
SHORT_STEPS = 20


def _manifests(folder: Path) -> Path:
    """The from-scratch example with two jobs of its own sizes: `pydoc` (served) and
    `pydoc-fast`, a shorter run at another learning rate to compare it with."""
    job: dict[str, Any] = yaml.safe_load((FROM_SCRATCH / "training-job.yaml").read_text())
    job["spec"]["training"].update(maxSteps=LIVE_STEPS, warmupSteps=8)
    job["spec"]["evaluation"]["interval"] = 40
    fast = json.loads(json.dumps(job))
    fast["metadata"]["name"] = "pydoc-fast"
    fast["spec"]["training"].update(maxSteps=SHORT_STEPS, warmupSteps=2, learningRate=0.004)
    fast["spec"]["output"] = fast["spec"]["output"].replace("/pydoc/", "/pydoc-fast/")
    folder.mkdir()
    (folder / "jobs.yaml").write_text(yaml.safe_dump_all([job, fast]))
    (folder / "deployment.yaml").write_text((FROM_SCRATCH / "deployment.yaml").read_text())
    return folder


def _step(page: Page, job: str) -> int:
    value = page.get_attribute(f'tr[data-job="local/{job}"] .steps', "data-step", timeout=60_000)
    return int(value or 0)


def _records(output: Path, kind: str) -> int:
    lines = (output / "metrics.jsonl").read_text().splitlines()
    return sum(json.loads(line)["kind"] == kind for line in lines)


def _train_records(output: Path) -> int:
    return _records(output, "train")


def _train_points(page: Page) -> int:
    return int(page.evaluate("llmkubeConsole.charts.loss.data[1].filter((v) => v !== null).length"))


def test_the_console_shows_training_live_compares_runs_and_chats(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_sample_data(data_dir)
    port, console_port = free_port(), free_port()
    run = Run(
        data_dir,
        str(_manifests(tmp_path / "manifests")),
        "--port",
        str(port),
        "--console-port",
        str(console_port),
    )
    try:
        run.wait_for("console at", timeout=120)
        url = f"http://127.0.0.1:{console_port}"
        assert f"console at {url}" in run.log
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = page_errors(page)

            # The jobs page: the row appears and its progress moves without a reload.
            page.goto(f"{url}/jobs")
            run.wait_for("training pydoc", timeout=120)
            page.wait_for_selector('tr[data-job="local/pydoc"]', timeout=60_000)
            first = _step(page, "pydoc")
            page.wait_for_function(
                "(first) => Number(document.querySelector("
                "'tr[data-job=\"local/pydoc\"] .steps').dataset.step) > first",
                arg=first,
                timeout=240_000,
            )
            screenshot(page, "console-jobs")

            # A job page opened mid-run: its loss curve grows from the live stream.
            page.goto(f"{url}/jobs/local/pydoc")
            page.wait_for_function("() => window.llmkubeConsole && llmkubeConsole.charts.loss")
            drawn = _train_points(page)
            last = page.evaluate("llmkubeConsole.charts.loss.data[0].at(-1) ?? -1")
            assert last < LIVE_STEPS, "the job finished before its page opened"
            page.wait_for_function(
                "(drawn) => llmkubeConsole.charts.loss.data[1]"
                ".filter((v) => v !== null).length > drawn",
                arg=drawn,
                timeout=120_000,
            )

            run.wait_for("serving pydoc at", timeout=600)
            # Every train record of metrics.jsonl is a point of the chart, on a fresh page.
            output = data_dir / "models" / "pydoc"
            page.goto(f"{url}/jobs/local/pydoc")
            page.wait_for_function("() => window.llmkubeConsole && llmkubeConsole.charts.loss")
            assert _train_points(page) == _train_records(output) > 10
            evaluated = page.locator("#evaluations tbody tr")
            assert evaluated.count() == _records(output, "eval") == 3  # steps 0, 40, 80
            assert "Succeeded" in page.inner_text("#summary")
            screenshot(page, "console-job")

            # Compare: both runs picked on the jobs page, overlaid, their settings side by side.
            page.goto(f"{url}/jobs")
            page.check('input[value="local/pydoc"]')
            page.check('input[value="local/pydoc-fast"]')
            page.click("text=Compare selected")
            page.wait_for_function("() => llmkubeConsole.charts.compare_train_loss")
            series = page.evaluate(
                "llmkubeConsole.charts.compare_train_loss.series.slice(1).map((s) => s.label)"
            )
            assert sorted(series) == ["local/pydoc", "local/pydoc-fast"]
            lengths = page.evaluate(
                "llmkubeConsole.charts.compare_train_loss.data.slice(1)"
                ".map((column) => column.filter((v) => v !== null).length)"
            )
            assert sorted(lengths) == sorted(
                _train_records(data_dir / "models" / job) for job in ("pydoc", "pydoc-fast")
            )
            differs = page.inner_text("tr.differs:has(th:text-is('training.learningRate'))")
            assert sorted(re.findall(r"0\.00[24]", differs)) == ["0.002", "0.004"]
            screenshot(page, "console-compare")

            # The playground streams an answer from the served model. A plain completion, greedy:
            # this 1 M-parameter model learned raw text, and under a chat template it may well
            # end its answer at once (the quickstart's test chats with a real chat model).
            page.goto(f"{url}/deployments")
            page.click('tr[data-deployment="local/pydoc"] >> text=Playground')
            page.wait_for_selector("#model[data-loaded]")
            assert page.locator("#model option").all_inner_texts() == ["pydoc"]
            page.check("#mode-completion")
            page.fill("#temperature", "0")
            page.fill("#prompt", "The for statement")
            page.fill("#max_tokens", "16")
            page.click("#send")
            page.wait_for_selector("#stats[data-tokens]", timeout=120_000)
            answer = page.text_content("#messages .message.assistant") or ""
            assert answer, "the answer is empty"
            assert not answer.startswith("error:"), answer
            assert int(page.get_attribute("#stats", "data-tokens") or 0) >= 1
            assert float(page.get_attribute("#stats", "data-ttft") or -1) >= 0
            screenshot(page, "console-playground")
            assert errors == [], errors
        assert run.interrupt() == 130, run.log
        run.assert_nothing_left()
    finally:
        run.close()
