"""A search's space, draws and early stopping, in Ray Tune's terms."""

from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchAlgorithm, Searcher
from ray.tune.search.optuna import OptunaSearch

from llmkube.api.runconfig import TuningRunConfig
from llmkube.api.tuning import STEP_KEY, SearchParameter


def domain(parameter: SearchParameter) -> Any:
    """One parameter as a Ray Tune domain."""
    if parameter.type == "choice":
        assert parameter.values is not None
        return tune.choice(parameter.values)
    assert parameter.min is not None
    assert parameter.max is not None
    if parameter.type == "int":
        return tune.randint(int(parameter.min), int(parameter.max) + 1)  # upper bound excluded
    if parameter.type == "loguniform":
        return tune.loguniform(parameter.min, parameter.max)
    return tune.uniform(parameter.min, parameter.max)


def param_space(config: TuningRunConfig) -> dict[str, Any]:
    """Field path → domain (a grid search: every value, so each combination runs once)."""
    if config.algorithm == "grid":
        return {
            path: tune.grid_search(parameter.grid() or [])
            for path, parameter in sorted(config.search_space.items())
        }
    return {path: domain(parameter) for path, parameter in sorted(config.search_space.items())}


def samples(config: TuningRunConfig) -> int:
    """Tune's num_samples: a grid's combinations each run once; other draws, trials.max."""
    return 1 if config.algorithm == "grid" else config.trials.max


def search_algorithm(config: TuningRunConfig) -> SearchAlgorithm | Searcher:
    if config.algorithm == "tpe":
        return ConcurrencyLimiter(
            OptunaSearch(sampler=optuna.samplers.TPESampler(seed=config.seed)),
            max_concurrent=config.trials.parallel,
        )
    return BasicVariantGenerator(random_state=config.seed, max_concurrent=config.trials.parallel)


# The objective's metric and mode reach the searcher and the scheduler from Tune's TuneConfig.


def scheduler(config: TuningRunConfig, total_steps: int) -> TrialScheduler:
    """ASHA on the steps of the evaluations, or none. Its horizon lies past the last step, so
    that it never stops a trial for reaching it: the trial ends there itself, published."""
    early = config.early_stopping
    if early is None:
        return FIFOScheduler()  # type: ignore[no-untyped-call]
    assert early.grace_period is not None, "the run config resolves it"
    return ASHAScheduler(
        time_attr=STEP_KEY,
        max_t=max(total_steps, early.grace_period) + 1,
        grace_period=early.grace_period,
        reduction_factor=early.reduction_factor,
    )
