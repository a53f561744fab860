"""`llmkube run` on the quickstart, as a user runs it: a real subprocess, Ctrl-C included."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmkube.local.child import session_processes
from llmkube.testing.processes import free_port
from llmkube.testing.training import command_line

ROOT = Path(__file__).parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"
LLMKUBE = [sys.executable, "-m", "llmkube.cli.main"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    env = {**os.environ, "LLMKUBE_DATA_DIR": str(tmp_path)}
    sample = subprocess.run(
        [*LLMKUBE, "data", "sample"], env=env, capture_output=True, text=True, check=False
    )
    assert sample.returncode == 0, sample.stderr
    assert "pydoc-topics.txt" in sample.stdout
    return tmp_path


class Run:
    def __init__(self, data_dir: Path, *args: str) -> None:
        self.log_path = data_dir / f"run-{time.monotonic_ns()}.log"
        self.sessions: set[int] = set()
        self.data_dir = data_dir
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*LLMKUBE, "run", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "LLMKUBE_DATA_DIR": str(data_dir), "COLUMNS": "200"},
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def watch_children(self) -> None:
        """Remember the sessions of the entrypoints `llmkube run` started."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            command = command_line(int(entry.name))
            if str(self.data_dir) in command and "llmkube.runtime." in command:
                self.sessions.add(int(entry.name))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch_children()
            if text in self.log:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"llmkube run exited {self.process.returncode}:\n{self.log}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed in {timeout}s:\n{self.log}")

    def interrupt(self, timeout: float = 120) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def assert_nothing_left(self) -> None:
        assert self.sessions, "the test never saw the entrypoints"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = [pid for session in self.sessions for pid in session_processes(session)]
            if not left:
                return
            time.sleep(0.5)
        raise AssertionError(f"processes left behind: {left}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for session in self.sessions:
            for pid in session_processes(session):
                os.kill(pid, signal.SIGKILL)


def test_quickstart_trains_serves_and_stops_cleanly(data_dir: Path) -> None:
    port = free_port()
    run = Run(data_dir, str(QUICKSTART), "--max-steps", "30", "--port", str(port))
    try:
        run.wait_for("serving pydoc at", timeout=600)
        model = data_dir / "models" / "pydoc" / "model"
        evaluation = json.loads((model / "eval.json").read_text())
        assert evaluation["step"] == 30
        assert f"eval loss {evaluation['eval_loss']:.4f}" in run.log
        assert (model / "model.safetensors").exists()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": "pydoc", "prompt": "The for statement", "max_tokens": 8},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        # Sampled (OpenAI's default temperature is 1): end-of-text may come before the 8th token.
        choice, usage = answer.json()["choices"][0], answer.json()["usage"]
        assert (choice["finish_reason"], usage["completion_tokens"] == 8) in {
            ("length", True),
            ("stop", False),
        }, answer.text
        env = {**os.environ, "LLMKUBE_DATA_DIR": str(data_dir)}
        chat = subprocess.run(
            [*LLMKUBE, "chat", "--endpoint", f"http://127.0.0.1:{port}/v1", "--max-tokens", "8"],
            input="What is a class?\n\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert chat.returncode == 0, chat.stderr
        assert "pydoc> " in chat.stdout
        generated = subprocess.run(
            [*LLMKUBE, "generate", "--model", f"file://{model}", "--max-tokens", "8", "x = "],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert generated.returncode == 0, generated.stderr
        assert generated.stdout.startswith("x = ")
        status = subprocess.run(
            [*LLMKUBE, "status", f"file://{data_dir}/models/pydoc"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert "step 30/30" in status.stdout
        assert f"eval loss {evaluation['eval_loss']:.4f}" in status.stdout
        assert run.interrupt() == 0, run.log
        run.assert_nothing_left()
    finally:
        run.close()


def test_stopped_training_resumes_from_its_checkpoint(data_dir: Path) -> None:
    job = str(QUICKSTART / "training-job.yaml")
    first = Run(data_dir, job, "--max-steps", "150")
    output = data_dir / "models" / "pydoc"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            first.watch_children()
            progress = output / "progress.json"
            if progress.exists() and json.loads(progress.read_text()).get("checkpoint_step"):
                break
            time.sleep(0.2)
        assert first.interrupt() == 130, first.log
        assert "run the same command again to resume (last checkpoint: step 100)" in first.log
        first.assert_nothing_left()
    finally:
        first.close()
    second = Run(data_dir, job, "--max-steps", "150")
    try:
        assert second.process.wait(600) == 0, second.log
    finally:
        second.close()
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "resume"] == [100]
    assert max(r["step"] for r in records if r["kind"] == "train") == 150
    assert (output / "model" / "eval.json").exists()
