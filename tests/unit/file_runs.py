"""Run configs of a tiny GPT job whose dataset and output are file:// folders under a test's
tmp_path, for tests of what a run does with its output."""

from pathlib import Path
from typing import Any

from llmkube.api import LLMTrainingJob
from llmkube.api.run_identity import identity_hash
from llmkube.api.runconfig import TrainingRunConfig, training_run_config
from llmkube.runtime.training.checkpoint import CheckpointState, checkpoint_uri, save_checkpoint
from llmkube.storage import open_store


def file_run_config(tmp_path: Path, **spec: Any) -> TrainingRunConfig:
    """Keyword arguments replace top-level spec fields."""
    job = LLMTrainingJob.model_validate(
        {
            "metadata": {"name": "on-files"},
            "spec": {
                "model": {"preset": "tiny"},
                "dataset": {"source": f"file://{tmp_path}/data"},
                "training": {"maxSteps": 100},
                "output": f"file://{tmp_path}/out",
                **spec,
            },
        }
    )
    return training_run_config(job)


def checkpoint(run: TrainingRunConfig, step: int, identity: dict[str, Any] | None) -> str:
    """A complete checkpoint of `step` recording `identity` (None: made before checkpoints
    recorded their run); its URI."""
    uri = checkpoint_uri(run.output, step)
    save_checkpoint(
        open_store("file://"),
        uri,
        weights=b"w",
        optimizer={},
        rng_states=[],
        state=CheckpointState(
            step=step,
            samples=step,
            tokens_seen=step,
            total_steps=100,
            identity=identity,
            identity_hash=identity_hash(identity) if identity else None,
        ),
    )
    return uri
