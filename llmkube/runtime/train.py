"""`python -m llmkube.runtime.train --config run.json`: the RayJob entrypoint, and what
`llmkube run` starts locally. Exit code 0 only once the model artifact is published.

Exit codes: 0 published (and exported, when spec.export asks); 1 training failed (after the
allowed worker restarts); 2 the config, data or storage is wrong, or the export was refused or
failed its parity check (the message says what to change); 128 + N stopped by signal N
(SIGINT, SIGTERM, SIGHUP, or SIGTERM from the kernel when the process that started it died):
Ray is shut down, and the newest complete checkpoint is what the same command resumes from.
"""

import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ray
import ray.train
from ray.train.torch import TorchTrainer

from llmkube.api.artifacts import MODEL_DIR
from llmkube.api.contract import METRICS_PORT_ENV
from llmkube.api.run_identity import RUN_CONFIG_FILE, identity_hash, output_identity
from llmkube.api.runconfig import GptConfig, TrainingRunConfig
from llmkube.api.training import EXAMPLE_FORMATS
from llmkube.runtime.artifact import CONFIG_FILE
from llmkube.runtime.artifact import TOKENIZER_FILE as ARTIFACT_TOKENIZER_FILE
from llmkube.runtime.data.errors import DataError
from llmkube.runtime.data.manifest import DataManifest
from llmkube.runtime.data.prepare import base_tokenizer_json, check_dataset, prepare_dataset
from llmkube.runtime.data.prepare_examples import prepare_examples
from llmkube.runtime.entrypoint import entrypoint, stop_ray
from llmkube.runtime.export.errors import ExportError
from llmkube.runtime.models import ModelConfig, read_model_config
from llmkube.runtime.models.errors import ModelError
from llmkube.runtime.training import pretrained
from llmkube.runtime.training.checkpoint import CheckpointMismatchError
from llmkube.runtime.training.export_step import export_published
from llmkube.runtime.training.loop import LoopConfig, sequences_in, train_loop_per_worker
from llmkube.runtime.training.output import OutputInUseError, plan_output
from llmkube.stopping import (
    raise_on_stop_signals,
)
from llmkube.storage import StorageError, open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import read_pointer, resolve_model

log = logging.getLogger("llmkube.train")


class Trainer(TorchTrainer):
    """Ray Train's TorchTrainer, except that SIGINT during `fit` stops the driver the way SIGTERM
    does (llmkube.stopping): Ray Train's own handler aborts the run and exits 0, as if
    training had ended."""

    def _register_sigint_handler(self, controller: object) -> None:
        pass


def total_steps(config: TrainingRunConfig, sequences: int) -> int:
    spec = config.training
    if spec.max_steps is not None:
        return spec.max_steps
    assert spec.epochs is not None
    per_step = spec.batch_size * spec.gradient_accumulation * config.scaling.workers
    return max(1, math.ceil(spec.epochs * sequences / per_step))


def _model_config(config: TrainingRunConfig, vocab_size: int) -> GptConfig:
    assert config.model is not None, "a GPT run"
    source = config.base_source()
    if source is not None:
        base = read_model_config(
            open_store(source, config.storage).read_bytes(join(source, CONFIG_FILE))
        )
        if not isinstance(base, GptConfig):
            raise ModelError(f"model.base {config.base} is not an llmkube GPT artifact")
        return base.model_copy(
            update={"dropout": config.model.dropout, "context_length": config.model.context_length}
        )
    return config.model.model_copy(update={"vocab_size": vocab_size})


def prepare(config: TrainingRunConfig) -> tuple[str, DataManifest, ModelConfig]:
    """The prepared data and the model config the workers build: a GPT's, or a pretrained
    model's summary, checked before Ray starts any worker."""
    if config.pretrained is None:
        base_tokenizer = base_tokenizer_json(config)
        start_ray()
        cache_uri, manifest = prepare_dataset(config, base_tokenizer)
        return cache_uri, manifest, _model_config(config, manifest.vocab_size)
    folder = pretrained.model_folder(config)
    summary = pretrained.resolve(config, folder)
    start_ray()
    if config.dataset.format in EXAMPLE_FORMATS:
        cache_uri, manifest = prepare_examples(config, folder, summary.context_length)
    else:
        tokenizer = folder / ARTIFACT_TOKENIZER_FILE
        if not tokenizer.exists():
            raise ModelError(
                f"{config.pretrained.uri} has no tokenizer.json, which text datasets are "
                "tokenized with; use dataset.format chat or instruction"
            )
        run_config = config.model_copy(
            update={
                "pretrained": config.pretrained.model_copy(
                    update={"context_length": summary.context_length}
                )
            }
        )
        cache_uri, manifest = prepare_dataset(run_config, tokenizer.read_text())
    return cache_uri, manifest, summary


def _worker_resources(config: TrainingRunConfig) -> dict[str, float]:
    resources: dict[str, float] = {"CPU": config.scaling.cpus_per_worker}
    if config.scaling.gpus_per_worker:
        resources["GPU"] = config.scaling.gpus_per_worker
    return resources


def start_ray() -> None:
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        port = os.environ.get(METRICS_PORT_ENV)
        ray.init(_metrics_export_port=int(port) if port else None)
    raise_on_stop_signals()  # ray.init replaced our SIGTERM handler with its own


def pin_sources(config: TrainingRunConfig) -> TrainingRunConfig:
    """The config with the models it reads resolved once (storage.versions): every worker then
    reads the same version, even if a job's model/ moves on meanwhile."""
    update = {}
    if config.base is not None:
        update["base_folder"] = resolve_model(open_store(config.base, config.storage), config.base)
    if config.pretrained is not None:
        uri = config.pretrained.uri
        update["pretrained_folder"] = resolve_model(open_store(uri, config.storage), uri)
    return config.model_copy(update={key: found.uri for key, found in update.items()})


def run(config: TrainingRunConfig, *, callbacks: Sequence[ray.train.UserCallback] = ()) -> int:
    """Train and publish; `callbacks` see every report (a search forwards them to Ray Tune)."""
    store = open_store(config.output, config.storage)
    # Another run's work in the output refuses this one before it writes anything (or is
    # deleted, with restartPolicy restart); wrong URIs and credentials fail in a second too,
    # before a Ray cluster starts.
    plan = plan_output(store, config)
    if plan.published is not None:
        log.info(
            "the model is already published at %s (version %s); nothing to do",
            join(config.output, MODEL_DIR),
            plan.published.version,
        )
        export_published(config)
        return 0
    if plan.resume_from is not None:
        log.info("resuming from the checkpoint of step %d", plan.resume_from)
    config = pin_sources(config)
    store.write_bytes(
        join(config.output, RUN_CONFIG_FILE),
        config.model_dump_json(by_alias=True, indent=2).encode(),
    )
    check_dataset(config)
    cache_uri, manifest, model_config = prepare(config)
    sequences = sequences_in(manifest, model_config.context_length)
    steps = total_steps(config, sequences)
    log.info(
        "training %d steps on %s sequences of %d tokens with %d worker(s)",
        steps,
        f"{sequences:,}",
        model_config.context_length,
        config.scaling.workers,
    )
    scratch = Path(tempfile.mkdtemp(prefix="llmkube-train-"))
    try:
        trainer = Trainer(
            train_loop_per_worker,
            train_loop_config=LoopConfig(
                run=config.model_dump(mode="json", by_alias=True),
                cache_uri=cache_uri,
                manifest=manifest,
                model=model_config.model_dump(mode="json", by_alias=True),
                total_steps=steps,
                scratch=str(scratch),
            ).model_dump(mode="json"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=config.scaling.workers,
                use_gpu=config.scaling.gpus_per_worker > 0,
                resources_per_worker=_worker_resources(config),
            ),
            run_config=ray.train.RunConfig(
                name=f"llmkube-{config.job.name}",
                storage_path=str(scratch / "ray-train"),
                failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
                # The stubs name Ray Train V1's callback type; V2 (which runs) takes these.
                callbacks=list(callbacks),  # type: ignore[arg-type]
            ),
        )
        trainer.fit()
    except ray.train.TrainingFailedError as error:
        log.error("training failed after %d allowed restart(s): %s", config.max_failures, error)
        return 1
    except KeyboardInterrupt:
        stop_ray()  # before the scratch folder goes: the workers still read their shards from it
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    published = read_pointer(store, config.output)
    if published is None or published.run != identity_hash(output_identity(config)):
        log.error("training ended but no model was published at %s", config.output)
        return 1
    export_published(config)
    return 0


REFUSALS = (
    DataError,
    StorageError,
    ModelError,
    CheckpointMismatchError,
    OutputInUseError,
    ExportError,
)
"""What ends a run with its message and exit code 2, without a traceback."""


def main(argv: list[str] | None = None) -> int:
    return entrypoint(
        argv,
        prog="python -m llmkube.runtime.train",
        description=__doc__,
        kind=TrainingRunConfig,
        run=run,
        refusals=REFUSALS,
        resumes="the same command resumes from the newest checkpoint",
        log=log,
    )


if __name__ == "__main__":
    sys.exit(main())
