"""The run config: the only thing the operator and `llmkube run` hand to the runtime.

The operator renders it into a ConfigMap mounted in the Ray pods; `llmkube run` builds the very
same object locally. It holds resolved values (preset dimensions, defaults, storage endpoint) and
the *names* of the environment variables carrying credentials, never the credentials themselves.
"""

from pathlib import Path
from typing import Literal, Self, TypeVar

from pydantic import Field, ValidationError, model_validator

from llmkube.api.base import StorageUri, WireModel, invalid
from llmkube.api.common import ObjectMeta, StorageSpec
from llmkube.api.deployment import LLMDeployment, ServingSpec
from llmkube.api.errors import describe
from llmkube.api.export import ExportSpec
from llmkube.api.training import (
    CheckpointSpec,
    DatasetSpec,
    EvaluationSpec,
    LLMTrainingJob,
    LLMTrainingJobSpec,
    LoraSpec,
    TokenizerSpec,
    TrainingResources,
    TrainingSpec,
)
from llmkube.api.tuning import (
    EarlyStopping,
    LLMTuningJob,
    Objective,
    SearchParameter,
    TrialsSpec,
    trial_spec,
)

# Environment variables the Ray pods get the S3 credentials in (from the user's Secret).
ACCESS_KEY_ENV = "AWS_ACCESS_KEY_ID"
SECRET_KEY_ENV = "AWS_SECRET_ACCESS_KEY"


class StorageConfig(WireModel):
    """How the runtime reaches object storage."""

    endpoint: str | None = None
    """S3 endpoint (host:port or URL); None for file:// only runs or AWS' default."""
    region: str | None = None
    """S3 region."""
    insecure: bool = False
    """Plain HTTP to the endpoint."""
    access_key_env: str = ACCESS_KEY_ENV
    """Environment variable holding the access key ID."""
    secret_key_env: str = SECRET_KEY_ENV
    """Environment variable holding the secret access key."""


class GptConfig(WireModel):
    """Concrete dimensions of llmkube's GPT (a preset with its overrides applied)."""

    architecture: Literal["gpt"] = "gpt"
    """Model family."""
    n_layer: int
    """Transformer blocks."""
    n_head: int
    """Attention heads per block."""
    d_model: int
    """Residual stream width."""
    context_length: int
    """Longest sequence in tokens."""
    dropout: float
    """Dropout probability."""
    vocab_size: int
    """Tokenizer vocabulary size."""


DEFAULT_PRETRAINED_CONTEXT = 1024
"""Context length of a fine-tune that names none: the model's own when shorter."""


class PretrainedConfig(WireModel):
    """A pretrained Hugging Face model and how it is fine-tuned."""

    uri: StorageUri
    """The model's folder (config.json, safetensors weights, tokenizer files)."""
    method: Literal["full", "lora"]
    """full: every weight trains; lora: low-rank adapters only."""
    lora: LoraSpec
    """Adapter settings, alpha resolved (targetModules resolve per architecture at run time)."""
    merge_on_publish: bool
    """Also publish the merged weights (lora)."""
    context_length: int | None = None
    """Training sequence length; None: the model's own, at most DEFAULT_PRETRAINED_CONTEXT (the
    model's config.json is read at run time, so this default resolves there)."""
    dropout: float | None = None
    """Dropout override; None keeps the model's."""


class JobIdentity(WireModel):
    """Which resource the run belongs to; labels metrics and logs."""

    name: str
    """Resource name."""
    namespace: str = "default"
    """Resource namespace."""


class ScalingConfig(WireModel):
    """Ray Train workers."""

    workers: int = Field(ge=1)
    """Number of workers."""
    gpus_per_worker: int = Field(ge=0)
    """GPUs per worker."""
    cpus_per_worker: int = Field(ge=1)
    """CPUs per worker."""


class TrainingRunConfig(WireModel):
    """Everything `python -m llmkube.runtime.train` needs to run an LLMTrainingJob."""

    version: Literal[1] = 1
    """Schema version of the run config."""
    kind: Literal["training"] = "training"
    """What this config runs."""
    job: JobIdentity
    """The resource this run belongs to."""
    model: GptConfig | None = None
    """Resolved GPT dimensions (ignored for the shape when base is set); None fine-tuning."""
    base: StorageUri | None = None
    """Model artifact to continue training from."""
    tokenizer: TokenizerSpec | None = None
    """Tokenizer to train (ignored when base is set); None fine-tuning."""
    pretrained: PretrainedConfig | None = None
    """The pretrained model to fine-tune, instead of a GPT."""
    dataset: DatasetSpec
    """Dataset, with its cache location resolved."""
    training: TrainingSpec
    """Optimization settings, every default resolved (warmupSteps, minLearningRate)."""
    evaluation: EvaluationSpec
    """Evaluation schedule."""
    checkpoint: CheckpointSpec
    """Checkpoint schedule."""
    export: ExportSpec = Field(default_factory=ExportSpec)
    """Exports made once the model is published (not part of what the model was trained
    with: a run that adds one finishes at once with the published model, then exports it)."""
    scaling: ScalingConfig
    """Ray Train workers."""
    max_failures: int = Field(ge=0)
    """Worker failures tolerated before the run fails."""
    storage: StorageConfig
    """Object-storage access."""
    output: StorageUri
    """Output prefix (layout: docs/architecture.md)."""
    restart_policy: Literal["resume", "restart"] = "resume"
    """What the run does with another run's work in its output (LLMTrainingJob.spec)."""
    base_folder: StorageUri | None = None
    """The folder `base` stood for when the run started; set by the driver, which resolves a
    job's model/ once: it may point at a newer version before this run is done reading it."""
    pretrained_folder: StorageUri | None = None
    """The same for `pretrained.uri`."""

    @model_validator(mode="after")
    def _one_model(self) -> Self:
        if (self.model is None) == (self.pretrained is None):
            raise invalid("a training run config names exactly one of model and pretrained")
        if self.model is not None and self.tokenizer is None:
            raise invalid("a run config training a GPT needs its tokenizer")
        return self

    @property
    def context_length(self) -> int:
        """Tokens per training sequence, as far as the config knows it (a fine-tune's may be
        shortened to its model's own at run time)."""
        if self.pretrained is not None:
            return self.pretrained.context_length or DEFAULT_PRETRAINED_CONTEXT
        assert self.model is not None
        return self.model.context_length

    def base_source(self) -> str | None:
        """Where the GPT continued from is read."""
        return self.base_folder or self.base

    def pretrained_source(self) -> str:
        """Where the model fine-tuned is read."""
        assert self.pretrained is not None
        return self.pretrained_folder or self.pretrained.uri


def scaling_config(resources: TrainingResources) -> ScalingConfig:
    """The workers Ray Train starts, and what the RayJob's worker pods request for them."""
    return ScalingConfig(
        workers=resources.workers,
        gpus_per_worker=resources.gpus_per_worker,
        cpus_per_worker=resources.cpus_per_worker,
    )


def training_run_config(
    job: LLMTrainingJob, *, default_endpoint: str | None = None
) -> TrainingRunConfig:
    """The run config for a training job. Pure: same job, same config."""
    spec = job.spec
    output = spec.output.rstrip("/")
    dataset = spec.dataset.model_copy(
        update={"cache": spec.dataset.cache or f"{output}/cache"}, deep=True
    )
    model, tokenizer, pretrained = None, None, None
    finetune = spec.resolved_finetune()
    if spec.model.pretrained is not None and finetune is not None:
        pretrained = PretrainedConfig(
            uri=spec.model.pretrained.uri,
            method=finetune.method,
            lora=finetune.lora,
            merge_on_publish=finetune.merge_on_publish,
            context_length=spec.model.overrides.context_length,
            dropout=spec.model.overrides.dropout,
        )
    else:
        dims = spec.model.dimensions()
        tokenizer = spec.tokenizer or TokenizerSpec()
        model = GptConfig(
            n_layer=dims.n_layer,
            n_head=dims.n_head,
            d_model=dims.d_model,
            context_length=dims.context_length,
            dropout=dims.dropout,
            vocab_size=tokenizer.resolved_vocab_size(),
        )
    return TrainingRunConfig(
        job=JobIdentity(name=job.metadata.name, namespace=job.metadata.namespace or "default"),
        model=model,
        base=spec.model.base,
        tokenizer=tokenizer,
        pretrained=pretrained,
        dataset=dataset,
        training=spec.training.resolved(),
        evaluation=spec.evaluation,
        checkpoint=spec.checkpoint,
        export=spec.export,
        scaling=scaling_config(spec.resources),
        max_failures=spec.backoff_limit,
        storage=storage_config(spec.storage, default_endpoint),
        output=output,
        restart_policy=spec.restart_policy,
    )


class TuningRunConfig(WireModel):
    """Everything `python -m llmkube.runtime.tune` needs to run an LLMTuningJob."""

    version: Literal[1] = 1
    """Schema version of the run config."""
    kind: Literal["tuning"] = "tuning"
    """What this config runs."""
    job: JobIdentity
    """The LLMTuningJob this search belongs to."""
    template: LLMTrainingJobSpec
    """The training job every trial runs, with the searched fields set."""
    objective: Objective
    """The metric and its direction (resolved)."""
    search_space: dict[str, SearchParameter]
    """Field path in the template → the values it may take."""
    algorithm: Literal["random", "grid", "tpe"]
    """How trials are drawn."""
    seed: int
    """Seed of the draws."""
    early_stopping: EarlyStopping | None
    """ASHA settings, grace period resolved; None runs every trial to the end."""
    trials: TrialsSpec
    """Number of trials, parallelism and failures allowed."""
    publish: Literal["best", "none"]
    """Whether the best trial's model is published to <output>/model."""
    storage: StorageConfig
    """Object-storage access of the search and of every trial."""
    output: StorageUri
    """The search's output prefix (the template's)."""


TRIALS_DIR = "trials"
"""Under a search's output: one folder per trial, each a training job's output."""
TRIAL_CHECKPOINTS_KEPT = 1
"""A trial keeps its newest checkpoint (what resumes it), not the template's count."""


def tuning_run_config(job: LLMTuningJob, *, default_endpoint: str | None = None) -> TuningRunConfig:
    """The run config for a tuning job. Pure."""
    spec = job.spec
    early = spec.early_stopping
    if early is not None:
        early = early.model_copy(
            update={"grace_period": early.grace_period or spec.template.evaluation.interval}
        )
    return TuningRunConfig(
        job=JobIdentity(name=job.metadata.name, namespace=job.metadata.namespace or "default"),
        template=spec.template,
        objective=spec.objective.model_copy(update={"mode": spec.objective.resolved_mode()}),
        search_space=spec.search_space,
        algorithm=spec.algorithm,
        seed=spec.seed,
        early_stopping=early,
        trials=spec.trials,
        publish=spec.publish,
        storage=storage_config(spec.template.storage, default_endpoint),
        output=spec.template.output.rstrip("/"),
    )


def trial_output(config: TuningRunConfig, trial: str) -> str:
    return f"{config.output}/{TRIALS_DIR}/{trial}"


def trial_run_config(
    config: TuningRunConfig, trial: str, values: dict[str, object]
) -> TrainingRunConfig:
    """The training run of one trial: the template with `values` set, writing under the
    search's trials/<trial>/ and sharing one dataset cache with the other trials. Pure."""
    spec = trial_spec(config.template, values)
    spec = spec.model_copy(
        update={
            "output": trial_output(config, trial),
            "dataset": spec.dataset.model_copy(
                update={"cache": spec.dataset.cache or f"{config.output}/cache"}
            ),
            "checkpoint": spec.checkpoint.model_copy(update={"keep": TRIAL_CHECKPOINTS_KEPT}),
            # Only the published winner is worth exporting, not every trial.
            "export": ExportSpec(),
        }
    )
    job = LLMTrainingJob(
        metadata=ObjectMeta(name=f"{config.job.name}-{trial}", namespace=config.job.namespace),
        spec=spec,
    )
    return training_run_config(job).model_copy(update={"storage": config.storage})


class AdapterConfig(WireModel):
    """A LoRA adapter a replica serves, its source resolved."""

    name: str
    """Its model id."""
    uri: StorageUri
    """Its folder."""


class ServeRunConfig(WireModel):
    """Everything the Ray Serve app `llmkube.runtime.serve:app` needs to serve a deployment."""

    version: Literal[1] = 1
    """Schema version of the run config."""
    kind: Literal["serving"] = "serving"
    """What this config runs."""
    deployment: JobIdentity
    """The LLMDeployment this serves (labels metrics)."""
    model_uri: StorageUri
    """The model artifact (a model/ folder) to load."""
    replicas: int = Field(ge=0)
    """Serve replicas."""
    gpus_per_replica: int = Field(ge=0)
    """GPUs per replica."""
    cpus_per_replica: int = Field(ge=1)
    """CPUs per replica."""
    serving: ServingSpec
    """Batching, limits and authentication."""
    adapters: list[AdapterConfig] = Field(default_factory=list)
    """LoRA adapters on the model. The operator passes them to Ray Serve as the deployment's
    user_config (see `adapters_user_config`), so a change reaches running replicas in place."""
    api_key_env: str | None = None
    """Environment variable holding the API key(s), when one is required (`llmkube run`)."""
    api_key_file: str | None = None
    """File holding the API key(s), when one is required: the Secret mounted in a cluster's
    pods, which the kubelet keeps current (a rotation needs no restart). With neither this nor
    api_key_env, the replica serves without authentication."""
    storage: StorageConfig
    """Object-storage access."""


API_KEY_ENV = "LLMKUBE_API_KEY"
API_KEYS_DIR = "/etc/llmkube/api-keys"
API_KEYS_FILE = f"{API_KEYS_DIR}/keys"


def serve_run_config(
    deployment: LLMDeployment,
    *,
    model_uri: str,
    adapter_uris: dict[str, str] | None = None,
    default_endpoint: str | None = None,
    keys_mounted: bool = False,
) -> ServeRunConfig:
    """The run config for a deployment serving `model_uri`, with the adapters in
    `adapter_uris` (name → folder; the caller resolves trainingJobRefs and leaves out what
    cannot be served). The API keys come from API_KEYS_FILE when `keys_mounted` (a cluster's
    pods mount the Secret there), else from $LLMKUBE_API_KEY. Pure."""
    spec = deployment.spec
    keyed = spec.serving.api_key_secret is not None
    return ServeRunConfig(
        deployment=JobIdentity(
            name=deployment.metadata.name, namespace=deployment.metadata.namespace or "default"
        ),
        model_uri=model_uri,
        replicas=spec.replicas,
        gpus_per_replica=spec.resources.gpus_per_replica,
        cpus_per_replica=spec.resources.cpus_per_replica,
        serving=spec.serving,
        adapters=[
            AdapterConfig(name=name, uri=uri) for name, uri in sorted((adapter_uris or {}).items())
        ],
        api_key_env=API_KEY_ENV if keyed and not keys_mounted else None,
        api_key_file=API_KEYS_FILE if keyed and keys_mounted else None,
        storage=storage_config(spec.storage, default_endpoint),
    )


ADAPTERS_KEY = "adapters"


def adapters_user_config(config: ServeRunConfig) -> dict[str, object]:
    """The Ray Serve user_config that carries a replica's adapters (changing it calls the
    replica's `reconfigure`, never restarts it)."""
    return {ADAPTERS_KEY: [adapter.to_wire() for adapter in config.adapters]}


def adapters_from_user_config(user_config: dict[str, object]) -> list[AdapterConfig]:
    listed = user_config.get(ADAPTERS_KEY) or []
    assert isinstance(listed, list), "adapters_user_config wrote it"
    return [AdapterConfig.model_validate(item) for item in listed]


def storage_config(storage: StorageSpec, default_endpoint: str | None) -> StorageConfig:
    """How a resource's s3:// URIs are reached (the operator's default endpoint when the
    resource names none); credentials travel separately, by environment variable."""
    return StorageConfig(
        endpoint=storage.endpoint or default_endpoint,
        region=storage.region,
        insecure=storage.insecure,
    )


class RunConfigError(Exception):
    """A run config file that cannot be read or is not valid; the message says which field."""


RunConfig = TypeVar("RunConfig", TrainingRunConfig, ServeRunConfig, TuningRunConfig)


def read_run_config(path: Path, kind: type[RunConfig]) -> RunConfig:
    """What an entrypoint does first with its `--config` file."""
    try:
        return kind.model_validate_json(path.read_bytes())
    except OSError as error:
        raise RunConfigError(f"cannot read {path}: {error.strerror}") from None
    except ValidationError as error:
        lines = "\n".join(describe(error))
        raise RunConfigError(f"{path} is not a valid run config:\n{lines}") from None
