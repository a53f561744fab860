"""LLMTuningJob: search the hyperparameters of an LLMTrainingJob with Ray Tune, stop poor trials
early, and publish the best trial's model."""

import copy
import itertools
import math
from typing import Annotated, Any, Literal, Self

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from llmkube.api.base import (
    GROUP_VERSION,
    StatusModel,
    WireModel,
    cel_default,
    cel_rules,
    invalid,
)
from llmkube.api.common import Condition, ObjectMeta
from llmkube.api.errors import describe
from llmkube.api.search_paths import PathError, leaf_field
from llmkube.api.training import LLMTrainingJobSpec, PublishedModel

ObjectiveMetric = Literal["eval_loss", "eval_perplexity", "eval_accuracy"]
EVALUATION_KEYS: dict[ObjectiveMetric, str] = {
    "eval_loss": "eval_loss",
    "eval_perplexity": "perplexity",
    "eval_accuracy": "accuracy",
}
"""Each objective metric, and its key in an evaluation's results (metrics.jsonl, eval.json)."""
STEP_KEY = "step"
TOTAL_STEPS_KEY = "total_steps"
"""What else a training run reports to Ray Train at each evaluation and checkpoint."""


def reported_metrics(
    step: int, total_steps: int, evaluation: dict[str, Any] | None
) -> dict[str, Any]:
    """What a training run reports to Ray Train (and, in a search, Ray Tune forwards to the
    scheduler): the step, and the objective metrics of the latest evaluation."""
    metrics: dict[str, Any] = {STEP_KEY: step, TOTAL_STEPS_KEY: total_steps}
    if evaluation is not None:
        metrics.update({metric: evaluation[key] for metric, key in EVALUATION_KEYS.items()})
    return metrics


OBJECTIVE_MODES: dict[str, Literal["min", "max"]] = {
    "eval_loss": "min",
    "eval_perplexity": "min",
    "eval_accuracy": "max",
}


class Objective(WireModel):
    """What the search optimizes: a metric of each trial's evaluations."""

    metric: ObjectiveMetric = "eval_loss"
    """The evaluation's loss, perplexity or next-token accuracy on the validation split."""
    mode: Literal["min", "max"] | None = None
    """min or max; default: min for eval_loss and eval_perplexity, max for eval_accuracy."""

    def resolved_mode(self) -> Literal["min", "max"]:
        return self.mode or OBJECTIVE_MODES[self.metric]


ChoiceValue = Annotated[
    float | int | str | bool,
    WithJsonSchema(
        {
            "x-kubernetes-preserve-unknown-fields": True,
            "description": "A number, string or boolean the field takes.",
        }
    ),
]
MAX_CHOICES = 100
MAX_GRID = 1000


class SearchParameter(WireModel):
    """The values a search may give one field of the template."""

    type: Literal["uniform", "loguniform", "int", "choice"]
    """uniform: a float in [min, max]; loguniform: a float in [min, max], uniform in its
    logarithm (learning rates); int: an integer in [min, max]; choice: one of values."""
    min: float | None = None
    """Lower bound (uniform, loguniform, int)."""
    max: float | None = None
    """Upper bound (uniform, loguniform, int)."""
    values: list[ChoiceValue] | None = Field(default=None, min_length=1, max_length=MAX_CHOICES)
    """The values to choose from (choice)."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.type == "choice":
            if self.values is None or self.min is not None or self.max is not None:
                raise invalid("type choice takes values, not min and max")
            return self
        if self.values is not None or self.min is None or self.max is None:
            raise invalid("type {type} takes min and max, not values", type=self.type)
        if self.min > self.max or (self.type != "int" and self.min == self.max):
            raise invalid("min must be below max")
        if self.type == "loguniform" and self.min <= 0:
            raise invalid("type loguniform needs min above 0")
        if self.type == "int" and not (self.min.is_integer() and self.max.is_integer()):
            raise invalid("type int takes whole numbers as min and max")
        return self

    def candidates(self) -> list[Any]:
        """Values the field must accept: the bounds of a range, or every choice."""
        if self.type == "choice":
            assert self.values is not None
            return list(self.values)
        assert self.min is not None
        assert self.max is not None
        if self.type == "int":
            return [int(self.min), int(self.max)]
        return [self.min, self.max]

    def grid(self) -> list[Any] | None:
        """Every value, when the parameter has finitely many; None for a continuous range."""
        if self.type == "choice":
            assert self.values is not None
            return list(self.values)
        if self.type == "int":
            assert self.min is not None
            assert self.max is not None
            return list(range(int(self.min), int(self.max) + 1))
        return None


class EarlyStopping(WireModel):
    """Stop trials whose objective lags at the evaluation steps (ASHA)."""

    type: Literal["asha"] = "asha"
    """asha: asynchronous successive halving."""
    grace_period: int | None = Field(default=None, ge=1)
    """Training steps every trial runs before it may be stopped; default: the template's
    evaluation.interval."""
    reduction_factor: float = Field(default=2.0, gt=1.0, le=100.0)
    """At each rung, the best 1/reductionFactor of trials go on."""


PARALLEL_OVER_MAX = "trials.parallel is more than trials.max; lower trials.parallel or raise max"


class TrialsSpec(WireModel):
    """How many trials run, and how many at once."""

    model_config = cel_rules(
        (f"{cel_default('parallel', 1)} <= {cel_default('max', 8)}", PARALLEL_OVER_MAX)
    )

    max: int = Field(default=8, ge=1, le=1000)
    """Trials in all (grid: at least the number of combinations, which is what runs)."""
    parallel: int = Field(default=1, ge=1, le=1000)
    """Trials running at once; each takes the template's resources."""
    max_failed: int = Field(default=0, ge=0, le=1000)
    """Trials that may fail (each is counted and the search goes on) before the search fails."""

    @model_validator(mode="after")
    def _parallel_fits(self) -> Self:
        if self.parallel > self.max:
            raise invalid(PARALLEL_OVER_MAX)
        return self


class LLMTuningJobSpec(WireModel):
    """Desired state of an LLMTuningJob."""

    template: LLMTrainingJobSpec
    """The LLMTrainingJob every trial runs, with the searched fields set. Its output is the
    search's: each trial writes under <output>/trials/<trial>/, the search's progress.json and
    trials.jsonl lie at <output>, and the best trial's model is published to <output>/model."""
    objective: Objective = Field(default_factory=Objective)
    """The metric the search optimizes."""
    search_space: dict[str, SearchParameter] = Field(min_length=1, max_length=32)
    """Field path in the template (e.g. training.learningRate, finetune.lora.rank) → the
    values it may take."""
    algorithm: Literal["random", "grid", "tpe"] = "random"
    """random: independent draws; grid: every combination of choice and int parameters;
    tpe: Optuna's Tree-structured Parzen Estimator, which learns from finished trials."""
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    """Seed of the search's draws (the same seed draws the same trials)."""
    early_stopping: EarlyStopping | None = None
    """Stop trials early; none: every trial runs to the end."""
    trials: TrialsSpec = Field(default_factory=TrialsSpec)
    """Number of trials and parallelism."""
    publish: Literal["best", "none"] = "best"
    """best: publish the best trial's model to <output>/model, as a training job would."""

    @field_validator("search_space")
    @classmethod
    def _fits_template(
        cls, space: dict[str, SearchParameter], info: ValidationInfo
    ) -> dict[str, SearchParameter]:
        template = info.data.get("template")
        for path, parameter in space.items():
            try:
                field = leaf_field(LLMTrainingJobSpec, path)
            except PathError as error:
                raise invalid("{path}: {error}", path=path, error=str(error)) from None
            if field.annotation is int and parameter.type in ("uniform", "loguniform"):
                raise invalid(
                    "{path} takes whole numbers; use type int or choice, not {type}",
                    path=path,
                    type=parameter.type,
                )
            for value in parameter.candidates():
                problem = template_refuses(template, {path: value}) if template else None
                if problem is not None:
                    raise invalid(
                        "{path}: the template refuses {value} ({problem})",
                        path=path,
                        value=repr(value),
                        problem=problem,
                    )
        return space

    @model_validator(mode="after")
    def _template_runs_unsuspended(self) -> Self:
        if self.template.suspend:
            raise invalid(
                "template.suspend does not apply to a search: its trials run as the search "
                "runs; remove it"
            )
        return self

    @model_validator(mode="after")
    def _grid_is_finite(self) -> Self:
        if self.algorithm != "grid":
            return self
        sizes = []
        for path, parameter in self.search_space.items():
            values = parameter.grid()
            if values is None:
                raise invalid(
                    "searchSpace.{path}: grid search takes type choice or int; {type} is a "
                    "continuous range (use algorithm random or tpe, or list values)",
                    path=path,
                    type=parameter.type,
                )
            sizes.append(len(values))
        combinations = math.prod(sizes)
        if combinations > min(self.trials.max, MAX_GRID):
            raise invalid(
                "the grid has {combinations} combinations, more than trials.max ({max}); raise "
                "trials.max or shrink searchSpace",
                combinations=combinations,
                max=self.trials.max,
            )
        return self

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination a grid search runs, in a fixed order."""
        paths = sorted(self.search_space)
        grids = [self.search_space[path].grid() or [] for path in paths]
        return [dict(zip(paths, values, strict=True)) for values in itertools.product(*grids)]


def with_values(template: LLMTrainingJobSpec, values: dict[str, Any]) -> dict[str, Any]:
    """The template on the wire with each field path set to its value."""
    wire = copy.deepcopy(template.model_dump(mode="json", by_alias=True, exclude_none=True))
    for path, value in values.items():
        node = wire
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return wire


def template_refuses(template: LLMTrainingJobSpec, values: dict[str, Any]) -> str | None:
    """Why the template with these values set is not a valid spec; None when it is."""
    try:
        LLMTrainingJobSpec.model_validate(with_values(template, values))
    except ValidationError as error:
        return "; ".join(line.replace("(document)", "template", 1) for line in describe(error))
    return None


def trial_spec(template: LLMTrainingJobSpec, values: dict[str, Any]) -> LLMTrainingJobSpec:
    """The spec a trial runs."""
    return LLMTrainingJobSpec.model_validate(with_values(template, values))


TuningPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class TrialCounts(StatusModel):
    """Trials by state."""

    total: int = 0
    """Trials the search runs in all."""
    running: int = 0
    """Trials running now."""
    succeeded: int = 0
    """Trials that trained to the end and published their model."""
    stopped_early: int = 0
    """Trials early stopping ended."""
    failed: int = 0
    """Trials that failed (counted against trials.maxFailed)."""


class BestTrial(StatusModel):
    """The finished trial with the best objective."""

    trial: str
    """Its name (its folder under <output>/trials/)."""
    params: dict[str, ChoiceValue]
    """The values it ran with, by field path."""
    metric: float
    """Its objective at its final evaluation."""
    step: int
    """The step of that evaluation."""
    model_uri: str | None = None
    """Its published model."""


class LLMTuningJobStatus(StatusModel):
    """Observed state of an LLMTuningJob."""

    phase: TuningPhase | None = None
    """Lifecycle phase."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Failed."""
    observed_generation: int | None = None
    """The generation the status describes."""
    ray_job_name: str | None = None
    """The RayJob running the search."""
    start_time: str | None = None
    """When the search started."""
    completion_time: str | None = None
    """When it ended."""
    trials: TrialCounts = Field(default_factory=TrialCounts)
    """Trials by state; the per-trial table is <output>/trials.jsonl."""
    trials_summary: str | None = None
    """Trials ended of all, e.g. "4/6 (2 running)"."""
    best_trial: BestTrial | None = None
    """The best finished trial so far."""
    model: PublishedModel | None = None
    """The best trial's model, published to <output>/model."""
    message: str | None = None
    """What happened last, in words."""


class LLMTuningJob(WireModel):
    """A hyperparameter search over an LLMTrainingJob."""

    api_version: Literal["llmkube.io/v1alpha1"] = GROUP_VERSION
    """API version."""
    kind: Literal["LLMTuningJob"] = "LLMTuningJob"
    """Kind."""
    metadata: ObjectMeta
    """Name and namespace."""
    spec: LLMTuningJobSpec
    """Desired state."""
    status: LLMTuningJobStatus | None = None
    """Observed state."""


TUNING_CONFIG_FILE = "tuning.json"
"""At a search's output: the run config it runs with."""
TRIALS_FILE = "trials.jsonl"
"""At a search's output: one TrialRecord per line, rewritten as trials move on."""
TUNE_DIR = "tune"
"""At a search's output: Ray Tune's experiment state, which a restarted search resumes."""

TrialState = Literal["pending", "running", "succeeded", "stopped_early", "failed"]


class TrialRecord(WireModel):
    """One trial, as `<output>/trials.jsonl` lists it."""

    trial: str
    """Its name: its folder under <output>/trials/."""
    state: TrialState
    """Where it stands."""
    params: dict[str, ChoiceValue]
    """The values it runs with, by field path."""
    step: int | None = None
    """The step of its latest report."""
    total_steps: int | None = None
    """The steps it would train for."""
    metric: float | None = None
    """Its objective at its latest evaluation (at its final one once succeeded)."""
    model_uri: str | None = None
    """Its published model (succeeded)."""
    error: str | None = None
    """Why it failed (failed)."""


class TuningProgress(WireModel):
    """`<output>/progress.json` of a search: what the operator turns into status."""

    trials: TrialCounts
    """Trials by state."""
    best_trial: BestTrial | None = None
    """The best succeeded trial so far."""
    updated_at: str
    """When this was written (RFC 3339)."""
    finished: bool = False
    """The search has ended (see failure for how)."""
    failure: str | None = None
    """Why the search failed, when it did."""
    model: PublishedModel | None = None
    """The best trial's model once published to <output>/model."""
