"""`llmkube run` on the from-scratch example, as a user runs it: a real subprocess, started as a
script's background job would start it (SIGINT ignored), and stopped by every signal a user, a
terminal or a supervisor sends — SIGKILL included."""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from llmkube.api.artifacts import complete_checkpoints_among
from llmkube.storage import open_store
from llmkube.testing.models import publish_byte_model
from llmkube.testing.processes import free_port
from tests.commands import llmkube
from tests.runtime.local_run import LLMKUBE, Run, write_sample_data
from tests.runtime.training_helpers import published_folder

ROOT = Path(__file__).parents[2]
FROM_SCRATCH = ROOT / "examples" / "from-scratch"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    printed = write_sample_data(tmp_path)
    assert "pydoc-topics.txt" in printed
    chat = tmp_path / "datasets" / "pydoc-chat" / "python-reference-chat.jsonl"
    assert f"wrote {chat}" in printed
    first = json.loads(chat.read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    return tmp_path


def test_from_scratch_trains_serves_and_stops_cleanly(data_dir: Path) -> None:
    port = free_port()
    run = Run(data_dir, str(FROM_SCRATCH), "--max-steps", "30", "--port", str(port))
    try:
        run.wait_for("serving pydoc at", timeout=600)
        model = data_dir / "models" / "pydoc" / "model"
        published = published_folder(model.parent)
        evaluation = json.loads((published / "eval.json").read_text())
        assert evaluation["step"] == 30
        assert f"eval loss {evaluation['eval_loss']:.4f}" in run.log
        assert (published / "model.safetensors").exists()
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
        # The example exports its model to ONNX once published (spec.export.onnx). Tokens are
        # compared with PyTorch's on better-trained models (test_training, test_onnx_export).
        assert "pydoc: exported to ONNX (max |Δlogits| against PyTorch" in run.log
        from_onnx = llmkube("generate", "--onnx", f"file://{model.parent}/onnx", "x = ")
        assert from_onnx.returncode == 0, from_onnx.stderr
        assert from_onnx.stdout.startswith("x = ")
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
        assert run.interrupt() == 130, run.log
        assert "serving stopped by SIGINT" in run.log
        run.assert_nothing_left()
    finally:
        run.close()


def test_stopped_training_resumes_from_its_checkpoint(data_dir: Path) -> None:
    job = str(FROM_SCRATCH / "training-job.yaml")
    # So many steps that no machine finishes them before the stop: the test cannot race the end
    # of training. The stop comes after the first checkpoint (step 100) and maybe later ones.
    first = Run(data_dir, job, "--max-steps", "1000000")
    output = data_dir / "models" / "pydoc"
    try:
        first.wait_for_checkpoint(output, timeout=600)
        assert first.interrupt() == 130, first.log
        first.assert_nothing_left()
    finally:
        first.close()
    hint = re.search(
        r"training stopped by SIGINT; run the same command again to resume "
        r"\(last checkpoint: step (\d+)\)",
        first.log,
    )
    assert hint, first.log
    checkpointed = int(hint.group(1))
    newest, _ = complete_checkpoints_among(str(path) for path in output.rglob("*"))[-1]
    assert checkpointed == newest >= 100
    second = Run(data_dir, job, "--max-steps", str(checkpointed + 50))
    try:
        assert second.process.wait(600) == 0, second.log
    finally:
        second.close()
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "resume"] == [checkpointed]
    assert max(r["step"] for r in records if r["kind"] == "train") == checkpointed + 50
    assert (published_folder(output) / "eval.json").exists()


def published_model(data_dir: Path) -> Path:
    """A model artifact and a deployment manifest serving it, without training."""
    model = data_dir / "models" / "byte" / "model"
    publish_byte_model(open_store(f"file://{model}"), f"file://{model}", steps=10)
    manifest = data_dir / "deployment.yaml"
    manifest.write_text(
        "apiVersion: llmkube.io/v1alpha1\n"
        "kind: LLMDeployment\n"
        "metadata: {name: byte}\n"
        f"spec: {{model: {{uri: 'file://{model}'}}, replicas: 1, "
        "resources: {gpusPerReplica: 0, cpusPerReplica: 2}}\n"
    )
    return manifest


def started_in(phase: str, data_dir: Path) -> Run:
    """`llmkube run` once it is training (its workers run) or serving."""
    if phase == "training":
        run = Run(data_dir, str(FROM_SCRATCH / "training-job.yaml"), "--max-steps", "1000000")
        run.wait_for_training(timeout=600)
    else:
        run = Run(data_dir, str(published_model(data_dir)), "--port", str(free_port()))
        run.wait_for("serving byte at", timeout=300)
    return run


@pytest.mark.parametrize(
    ("phase", "signum", "twice"),
    [
        ("serving", signal.SIGTERM, False),
        ("serving", signal.SIGHUP, False),
        ("training", signal.SIGTERM, False),
        ("training", signal.SIGHUP, True),
    ],
    ids=["serving-SIGTERM", "serving-SIGHUP", "training-SIGTERM", "training-SIGHUP-twice"],
)
def test_a_stop_signal_stops_everything(
    data_dir: Path, phase: str, signum: int, twice: bool
) -> None:
    run = started_in(phase, data_dir)
    try:
        if twice:
            # The second signal, once stopping has begun, kills the sessions at once.
            run.process.send_signal(signum)
            run.wait_for(f"stopping {phase}", timeout=10)
        assert run.interrupt(signum) == 128 + signum, run.log
        assert f"{phase} stopped by {signal.Signals(signum).name}" in run.log
        run.assert_nothing_left()
    finally:
        run.close()


@pytest.mark.parametrize("phase", ["training", "serving"])
def test_killing_llmkube_run_leaves_nothing(data_dir: Path, phase: str) -> None:
    run = started_in(phase, data_dir)
    try:
        run.process.kill()
        run.process.wait()
        # No code of llmkube run ran: the entrypoint saw its parent die and shut Ray down.
        run.assert_nothing_left(timeout=30)
    finally:
        run.close()
