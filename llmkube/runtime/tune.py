"""`python -m llmkube.runtime.tune --config tuning.json`: the RayJob entrypoint of an
LLMTuningJob, and what `llmkube run` starts locally for one.

Ray Tune runs the trials; each trial runs the template's training job with its values, as a
training job runs (see `llmkube.runtime.tuning.trial`), writing under <output>/trials/<trial>/.
Tune's experiment state lies under <output>/tune/, so the same command started again resumes
the search: finished trials are not run again, unfinished ones resume from their checkpoints.

Exit codes: 0 the search ended and (publish: best) the best trial's model is published; 1 more
trials failed than trials.maxFailed allows, or none finished; 2 the config, data or storage is
wrong; 128 + N stopped by signal N.
"""

import json
import logging
import os
import sys

from ray import tune

from llmkube.api.run_identity import identity_changes
from llmkube.api.runconfig import (
    TuningRunConfig,
    trial_output,
    trial_run_config,
)
from llmkube.api.tuning import TUNE_DIR, TUNING_CONFIG_FILE
from llmkube.runtime import train
from llmkube.runtime.data.prepare import check_dataset
from llmkube.runtime.entrypoint import entrypoint
from llmkube.runtime.training.loop import sequences_in
from llmkube.runtime.tuning.experiment_storage import experiment_location
from llmkube.runtime.tuning.publish import publish_best
from llmkube.runtime.tuning.recorder import (
    FailureBudget,
    SearchRecorder,
    best_of,
    progress,
    read_trials,
    write_progress,
)
from llmkube.runtime.tuning.space import param_space, samples, scheduler, search_algorithm
from llmkube.runtime.tuning.trial import run_trial
from llmkube.storage import ObjectStore, open_store
from llmkube.storage.uri import join

log = logging.getLogger("llmkube.tune")

# The trial function only waits on its Ray Train run, whose workers hold the CPUs and GPUs;
# Tune refuses a trial that asks for nothing, so it asks for a token of memory.
TRIAL_DRIVER_RESOURCES: dict[str, float] = {"CPU": 0, "memory": 2**20}
TEMPLATE_TRIAL = "template"


def _template_steps(config: TuningRunConfig) -> int:
    """Steps of the template's own run, after preparing its dataset once for every trial
    (the trials share the cache): early stopping's horizon."""
    template = trial_run_config(config, TEMPLATE_TRIAL, {})
    check_dataset(template)
    _, manifest, model = train.prepare(template)
    return train.total_steps(template, sequences_in(manifest, model.context_length))


def _tuner(config: TuningRunConfig, total_steps: int) -> tune.Tuner:
    storage_path, filesystem = experiment_location(config)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, config=config.model_dump(mode="json")),
        TRIAL_DRIVER_RESOURCES,
    )
    experiment = f"{storage_path}/{config.job.name}"
    if tune.Tuner.can_restore(experiment, storage_filesystem=filesystem):
        log.info("resuming the search saved at %s", join(config.output, TUNE_DIR))
        return tune.Tuner.restore(
            experiment,
            trainable,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
            storage_filesystem=filesystem,
        )
    recorder = SearchRecorder(config, total=_planned_trials(config))
    return tune.Tuner(
        trainable,
        param_space=param_space(config),
        tune_config=tune.TuneConfig(
            metric=config.objective.metric,
            mode=config.objective.mode,
            num_samples=samples(config),
            search_alg=search_algorithm(config),
            scheduler=scheduler(config, total_steps),
        ),
        run_config=tune.RunConfig(
            name=config.job.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            callbacks=[recorder],
            stop=FailureBudget(recorder, config.trials.max_failed),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    )


def _planned_trials(config: TuningRunConfig) -> int:
    if config.algorithm == "grid":
        sizes = [len(p.grid() or []) for p in config.search_space.values()]
        count = 1
        for size in sizes:
            count *= size
        return count
    return config.trials.max


class SearchOutputInUseError(Exception):
    """The output holds a search started with other settings, which this one would resume."""


# A restarted search may run more or fewer trials at once, or reach storage another way.
MAY_CHANGE_ON_RESUME = ("trials.parallel", "storage.")


def check_output(store: ObjectStore, config: TuningRunConfig) -> None:
    """Refuse an output holding another search: Ray Tune would resume *that* search."""
    uri = join(config.output, TUNING_CONFIG_FILE)
    if not store.exists(uri):
        return
    recorded = json.loads(store.read_bytes(uri))
    current = json.loads(config.model_dump_json(by_alias=True))
    changes = [
        change
        for change in identity_changes(recorded, current)
        if not change.startswith(MAY_CHANGE_ON_RESUME)
    ]
    if changes:
        raise SearchOutputInUseError(
            f"{config.output} holds a search started with other settings ("
            + "; ".join(changes[:8])
            + "); the same command resumes only that search. Write to a new output, or delete "
            f"{join(config.output, TUNE_DIR)} and {uri} to start this one there"
        )


def run(config: TuningRunConfig) -> int:
    store = open_store(config.output, config.storage)
    check_output(store, config)
    store.write_bytes(
        join(config.output, TUNING_CONFIG_FILE),
        config.model_dump_json(by_alias=True, indent=2).encode(),
    )
    total_steps = _template_steps(config)
    log.info(
        "searching %s over %s with %s: %d trial(s), %d at a time, %d steps each",
        config.objective.metric,
        ", ".join(sorted(config.search_space)),
        config.algorithm,
        _planned_trials(config),
        config.trials.parallel,
        total_steps,
    )
    _tuner(config, total_steps).fit()
    records = read_trials(store, config)  # as the recorder wrote them when the search ended
    failed = sum(record.state == "failed" for record in records)
    failure = None
    if failed > config.trials.max_failed:
        failure = (
            f"{failed} trial(s) failed, more than trials.maxFailed "
            f"({config.trials.max_failed}); see {join(config.output, 'trials.jsonl')}"
        )
    best = best_of(records, config.objective.resolved_mode())
    if failure is None and best is None:
        failure = "no trial trained to the end; see the trials' logs"
    model = None
    if failure is None and best is not None and config.publish == "best":
        model = publish_best(store, config.output, trial_output(config, best.trial))
        log.info(
            "best trial %s (%s %s): published to %s as version %s",
            best.trial,
            config.objective.metric,
            best.metric,
            model.uri,
            model.version,
        )
    write_progress(
        store,
        config,
        progress(
            config, _planned_trials(config), records, finished=True, failure=failure, model=model
        ),
    )
    if failure is not None:
        log.error("the search failed: %s", failure)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    # Our handlers end the search on SIGINT as on SIGTERM; Tune's own would end it as if done.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    return entrypoint(
        argv,
        prog="python -m llmkube.runtime.tune",
        description=__doc__,
        kind=TuningRunConfig,
        run=run,
        refusals=(*train.REFUSALS, SearchOutputInUseError),
        resumes="the same command resumes the search",
        log=log,
    )


if __name__ == "__main__":
    sys.exit(main())
