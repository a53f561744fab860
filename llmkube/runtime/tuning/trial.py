"""One trial: the template's training job with the trial's values, run as a training job runs
(the same TorchTrainer), its reports forwarded to Ray Tune so that early stopping sees them."""

import json
import logging
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from llmkube.api.artifacts import EVAL_FILE, MODEL_DIR
from llmkube.api.runconfig import TuningRunConfig, trial_run_config
from llmkube.api.tuning import reported_metrics
from llmkube.runtime import train
from llmkube.storage import open_store
from llmkube.storage.uri import join
from llmkube.storage.versions import resolve_model

log = logging.getLogger("llmkube.tune")


class TrialFailedError(RuntimeError):
    """Training ended without a published model; Ray Tune marks the trial failed."""


def trial_name(trial_id: str) -> str:
    """A trial's folder name under <output>/trials/: Tune's trial id, which a restored search
    keeps, as a DNS label."""
    return trial_id.replace("_", "-").lower()


def run_trial(values: dict[str, Any], *, config: dict[str, Any]) -> None:
    """Ray Tune's function trainable. A trial whose model a search published before it was
    restarted trains nothing: `train.run` finds the model, and its evaluation is reported."""
    tuning = TuningRunConfig.model_validate(config)
    name = trial_name(tune.get_context().get_trial_id())
    run_config = trial_run_config(tuning, name, values)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.info("trial %s: %s", name, ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
    code = train.run(run_config, callbacks=[TuneReportCallback()])  # type: ignore[no-untyped-call]
    if code != 0:
        raise TrialFailedError(f"trial {name}: training ended with exit code {code}")
    store = open_store(run_config.output, run_config.storage)
    model = resolve_model(store, join(run_config.output, MODEL_DIR))
    final = json.loads(store.read_bytes(join(model.uri, EVAL_FILE)))
    tune.report(reported_metrics(final["step"], final["step"], final))
