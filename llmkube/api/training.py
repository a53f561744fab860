"""LLMTrainingJob: the spec users write and the status the operator reports."""

from typing import Literal, Self

from pydantic import ConfigDict, Field, model_validator

from llmkube.api.base import (
    GROUP_VERSION,
    Cel,
    Quantity,
    StatusModel,
    StorageUri,
    WireModel,
    cel_default,
    cel_literal_of,
    cel_rules,
    invalid,
    normalized_prefix,
)
from llmkube.api.common import (
    Condition,
    NodePool,
    ObjectMeta,
    PodResources,
    Scheduling,
    StorageSpec,
)
from llmkube.api.export import ExportSpec
from llmkube.api.presets import DEFAULT_PRESET, PRESETS, GptDimensions, PresetName


class ModelOverrides(WireModel):
    """Per-field changes to the preset's dimensions."""

    n_layer: int | None = Field(default=None, ge=1, le=128)
    """Number of transformer blocks."""
    n_head: int | None = Field(default=None, ge=1, le=128)
    """Attention heads per block; must divide dModel."""
    d_model: int | None = Field(default=None, ge=8, le=16384)
    """Width of the residual stream (embedding size)."""
    context_length: int | None = Field(default=None, ge=8, le=131072)
    """Longest sequence the model sees, in tokens."""
    dropout: float | None = Field(default=None, ge=0.0, lt=1.0)
    """Dropout probability during training."""


class PretrainedModel(WireModel):
    """A pretrained model in Hugging Face format to fine-tune."""

    uri: StorageUri
    """Folder holding config.json, *.safetensors weights and the tokenizer files (optionally
    generation_config.json), e.g. s3://models/smollm2-135m-instruct/ (`llmkube models import`
    puts one there). Architectures: llama, qwen2, gpt2; remote code is never run."""


PRESET_AND_PRETRAINED = (
    "model.preset and model.pretrained exclude each other: a pretrained model brings its own "
    "size; remove model.preset"
)
BASE_AND_PRETRAINED = "model.base and model.pretrained exclude each other; keep one"
SHAPE_FROM_MODEL = (
    "overrides.nLayer, nHead and dModel cannot change the shape of model.base or "
    "model.pretrained: the shape comes from that model; remove them"
)
HEADS_DIVIDE = (
    "dModel must be a multiple of nHead (each head gets dModel/nHead dimensions); change "
    "overrides.dModel or overrides.nHead"
)
_SHAPE_FIELDS = ("nLayer", "nHead", "dModel")


def _dimension_cel(field: str, preset_field: str) -> str:
    """CEL for one resolved dimension: the override, else the preset's (default preset: small)."""
    by_preset = ", ".join(
        f"'{name}': {getattr(dims, preset_field)}" for name, dims in PRESETS.items()
    )
    preset = cel_default("preset", DEFAULT_PRESET)
    return (
        f"(has(self.overrides) && has(self.overrides.{field}) ? self.overrides.{field} : "
        f"{{{by_preset}}}[{preset}])"
    )


_D_MODEL, _N_HEAD = _dimension_cel("dModel", "d_model"), _dimension_cel("nHead", "n_head")


class ModelSpec(WireModel):
    """The model to train: llmkube's GPT from a preset, or a pretrained Hugging Face model."""

    model_config = cel_rules(
        ("!has(self.pretrained) || !has(self.preset)", PRESET_AND_PRETRAINED),
        ("!has(self.pretrained) || !has(self.base)", BASE_AND_PRETRAINED),
        (
            "!(has(self.base) || has(self.pretrained)) || !has(self.overrides) || "
            + " && ".join(f"!has(self.overrides.{f})" for f in _SHAPE_FIELDS),
            SHAPE_FROM_MODEL,
        ),
        (f"{_D_MODEL} % {_N_HEAD} == 0", HEADS_DIVIDE),
    )

    architecture: Literal["gpt"] = "gpt"
    """Family of a model trained from scratch. gpt: llmkube's decoder-only transformer. A
    pretrained model's architecture comes from its config.json."""
    preset: PresetName | None = None
    """Named size of a model trained from scratch: tiny (CPU tests), small (~10M parameters,
    the default), gpt2-124m. Not allowed with pretrained."""
    overrides: ModelOverrides = Field(default_factory=ModelOverrides)
    """Changes to the preset's dimensions. With pretrained or base only contextLength and
    dropout apply."""
    base: StorageUri | None = None
    """URI of a published llmkube GPT (its model/ folder) to continue training from. Its
    architecture and tokenizer are used; only dropout and contextLength may be overridden."""
    pretrained: PretrainedModel | None = None
    """A pretrained Hugging Face model to fine-tune (see finetune). Its tokenizer is used."""

    def dimensions(self) -> GptDimensions:
        """The preset with the overrides applied."""
        preset = PRESETS[self.preset or DEFAULT_PRESET]
        changes = self.overrides.model_dump(exclude_none=True)
        return preset._replace(**changes)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.pretrained is not None:
            if self.preset is not None:
                raise invalid(PRESET_AND_PRETRAINED)
            if self.base is not None:
                raise invalid(BASE_AND_PRETRAINED)
        if self.base is not None or self.pretrained is not None:
            overrides = self.overrides
            if (overrides.n_layer, overrides.n_head, overrides.d_model) != (None, None, None):
                raise invalid(SHAPE_FROM_MODEL)
        dims = self.dimensions()
        if dims.d_model % dims.n_head:
            raise invalid(
                HEADS_DIVIDE + " (dModel {d_model}, nHead {n_head})",
                d_model=dims.d_model,
                n_head=dims.n_head,
            )
        return self


BYTE_VOCAB = "vocabSize does not apply to type byte (always 256 tokens); remove it"


class TokenizerSpec(WireModel):
    """How text becomes tokens. Ignored when continuing from model.base (its tokenizer is used)."""

    model_config = cel_rules(
        ("!has(self.type) || self.type != 'byte' || !has(self.vocabSize)", BYTE_VOCAB)
    )

    type: Literal["bpe", "byte"] = "bpe"
    """bpe: byte-level BPE trained on the dataset; byte: the 256 raw byte values."""
    vocab_size: int | None = Field(default=None, ge=260, le=262144)
    """Vocabulary size of the BPE tokenizer. Defaults to 8192 for bpe; not allowed for byte."""

    @model_validator(mode="after")
    def _vocab_fits_type(self) -> Self:
        if self.type == "byte" and self.vocab_size is not None:
            raise invalid(BYTE_VOCAB)
        return self

    def resolved_vocab_size(self) -> int:
        if self.type == "byte":
            return 256
        return self.vocab_size or 8192


FRACTION_OR_SOURCE = "set either fraction or source, not both"


class ValidationSplit(WireModel):
    """Which text is held out for evaluation: a fraction of the dataset, or a separate source."""

    model_config = cel_rules(("!has(self.fraction) || !has(self.source)", FRACTION_OR_SOURCE))

    fraction: float | None = Field(default=None, gt=0.0, le=0.5)
    """Share of documents held out (deterministic by content hash). Defaults to 0.05."""
    source: StorageUri | None = None
    """A separate dataset prefix used only for validation, in the same format."""

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if self.fraction is not None and self.source is not None:
            raise invalid(FRACTION_OR_SOURCE)
        return self


class Preprocessing(WireModel):
    """Cleaning applied to every document before tokenization."""

    normalize_unicode: Literal["NFC", "NFKC", "none"] = "NFC"
    """Unicode normalization form applied to the text."""
    strip_control_characters: bool = True
    """Drop control characters other than newline and tab."""
    dedupe: bool = True
    """Drop exact-duplicate documents (after normalization)."""
    min_chars: int = Field(default=1, ge=0, le=1_000_000)
    """Drop documents shorter than this many characters."""


DatasetFormat = Literal["text", "jsonl", "parquet", "chat", "instruction"]
EXAMPLE_FORMATS = ("chat", "instruction")
"""Formats made of prompt/answer examples rather than running text."""


class DatasetSpec(WireModel):
    """The text to train on."""

    source: StorageUri
    """Prefix holding the dataset files, e.g. s3://datasets/shakespeare/."""
    format: DatasetFormat = "text"
    """text: documents separated by blank lines; jsonl / parquet: one document per record;
    chat: JSONL, one {"messages": [{"role", "content"}, ...]} per line, rendered with the
    model's chat template; instruction: JSONL, one {"prompt", "completion"} per line. chat and
    instruction need model.pretrained."""
    text_field: str = Field(default="text", min_length=1, max_length=256)
    """Field holding the document text (jsonl and parquet)."""
    train_on_prompt: bool = False
    """chat and instruction: also learn the prompt (system and user turns). By default only the
    answers carry loss."""
    packing: bool = False
    """chat and instruction: pack several short examples into each contextLength sequence (less
    padding, faster; examples then attend to the ones before them in their sequence). By
    default each example is its own sequence, cut at contextLength."""
    skip_invalid_records: bool = False
    """chat and instruction: skip records with missing or wrong fields, with a warning that
    counts them. By default one such record fails the job, naming its file and line."""
    validation: ValidationSplit = Field(default_factory=ValidationSplit)
    """Held-out text for evaluation."""
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    """Cleaning applied before tokenization."""
    cache: StorageUri | None = None
    """Where tokenized shards are cached (keyed by content + tokenizer + preprocessing). Defaults
    to <output>/cache; point several jobs at one prefix to share it."""


DEFAULT_LEARNING_RATE = 3e-4
MIN_LR_ABOVE_LR = "minLearningRate is above learningRate; the schedule only decays"
WARMUP_TOO_LONG = "warmupSteps must be below maxSteps"
_LEARNING_RATE = cel_default("learningRate", DEFAULT_LEARNING_RATE)


class TrainingSpec(WireModel):
    """The optimization run."""

    model_config = cel_rules(
        Cel(
            "has(self.maxSteps) != has(self.epochs)",
            "set exactly one of training.maxSteps or training.epochs",
            "'set exactly one of training.maxSteps or training.epochs (found ' + "
            "(has(self.maxSteps) ? 'both' : 'neither') + ')'",
        ),
        (
            f"!has(self.minLearningRate) || self.minLearningRate <= {_LEARNING_RATE}",
            MIN_LR_ABOVE_LR,
        ),
        (
            "!has(self.maxSteps) || !has(self.warmupSteps) || self.warmupSteps < self.maxSteps",
            WARMUP_TOO_LONG,
        ),
    )

    max_steps: int | None = Field(default=None, ge=1, le=1_000_000_000)
    """Optimizer steps to run. Set this or epochs."""
    epochs: float | None = Field(default=None, gt=0.0, le=100_000.0)
    """Passes over the training data (fractions allowed). Set this or maxSteps."""
    batch_size: int = Field(default=8, ge=1, le=65536)
    """Sequences per worker per micro-step."""
    gradient_accumulation: int = Field(default=1, ge=1, le=4096)
    """Micro-steps accumulated into one optimizer step."""
    learning_rate: float = Field(default=DEFAULT_LEARNING_RATE, gt=0.0, le=1.0)
    """Peak learning rate."""
    min_learning_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Learning rate at the end of the schedule. Defaults to learningRate / 10."""
    warmup_steps: int | None = Field(default=None, ge=0, le=1_000_000_000)
    """Steps of linear warmup from zero to learningRate. Defaults to 100, or a tenth of maxSteps
    when that is fewer."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay from learningRate to minLearningRate after warmup."""
    weight_decay: float = Field(default=0.1, ge=0.0, le=10.0)
    """Decoupled (AdamW) weight decay; not applied to norms, biases and embeddings."""
    grad_clip: float = Field(default=1.0, ge=0.0, le=1e6)
    """Clip the global gradient norm to this value; 0 disables clipping."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Autocast precision on GPU; CPU workers always use fp32."""
    compile: bool = False
    """Compile the model with torch.compile."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them: less memory for
    more compute (pretrained models only)."""
    seed: int = Field(default=1337, ge=0, le=2**32 - 1)
    """Seed for initialization, data order and dropout."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.max_steps is None) == (self.epochs is None):
            raise invalid(
                "set exactly one of training.maxSteps or training.epochs (found {found})",
                found="both" if self.max_steps is not None else "neither",
            )
        if self.min_learning_rate is not None and self.min_learning_rate > self.learning_rate:
            raise invalid(
                MIN_LR_ABOVE_LR + " ({low} > {high})",
                low=self.min_learning_rate,
                high=self.learning_rate,
            )
        if (
            self.max_steps is not None
            and self.warmup_steps is not None
            and self.warmup_steps >= self.max_steps
        ):
            raise invalid(
                WARMUP_TOO_LONG + " ({warmup} >= {steps})",
                warmup=self.warmup_steps,
                steps=self.max_steps,
            )
        return self

    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.max_steps is not None:
            return min(100, self.max_steps // 10)
        return 100

    def resolved_min_learning_rate(self) -> float:
        if self.min_learning_rate is None:
            return self.learning_rate / 10
        return self.min_learning_rate

    def resolved(self) -> Self:
        """These settings with every default filled in: what a run config carries."""
        return self.model_copy(
            update={
                "warmup_steps": self.resolved_warmup_steps(),
                "min_learning_rate": self.resolved_min_learning_rate(),
            }
        )

    def cut_to(self, max_steps: int) -> Self:
        """Resolved settings for a run cut short to `max_steps` (`llmkube run --max-steps`): the
        warmup shrinks to a tenth of the run when it was longer."""
        return self.resolved().model_copy(
            update={
                "max_steps": max_steps,
                "epochs": None,
                "warmup_steps": min(self.resolved_warmup_steps(), max_steps // 10),
            }
        )


class EvaluationSpec(WireModel):
    """How and how often the model is evaluated."""

    interval: int = Field(default=500, ge=1)
    """Evaluate every this many optimizer steps (and always at the end)."""
    batches: int = Field(default=20, ge=1, le=100_000)
    """Validation batches per evaluation."""
    sample_prompts: list[str] = Field(default_factory=list, max_length=32)
    """Prompts whose completions are logged at each evaluation."""
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    """Length of each sample completion."""


class CheckpointSpec(WireModel):
    """Checkpoints written to <output>/checkpoints/ so a failed run resumes."""

    interval: int = Field(default=500, ge=1)
    """Checkpoint every this many optimizer steps (and at the end)."""
    keep: int = Field(default=3, ge=1, le=1000)
    """How many of the newest checkpoints to keep."""


class LoraSpec(WireModel):
    """Low-rank adapters (LoRA) trained in place of the pretrained weights."""

    rank: int = Field(default=8, ge=1, le=1024)
    """Rank of each adapter's update; at most the width of the layers it adapts."""
    alpha: float | None = Field(default=None, gt=0.0, le=65536.0)
    """Scale of the update (applied as alpha / rank). Defaults to twice the rank."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Dropout on the adapters' input during training."""
    target_modules: list[str] | None = Field(default=None, min_length=1, max_length=64)
    """Names of the linear layers to adapt (the last part of their module name, e.g. q_proj).
    Defaults to the attention projections: q_proj, k_proj, v_proj, o_proj for llama and
    qwen2; c_attn for gpt2."""

    def resolved_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.rank


class FinetuneSpec(WireModel):
    """How a pretrained model is fine-tuned."""

    method: Literal["full", "lora"] = "lora"
    """lora: train low-rank adapters and publish only them (small, fast, little memory);
    full: train every weight and publish the whole model."""
    lora: LoraSpec = Field(default_factory=LoraSpec)
    """Adapter settings (method lora)."""
    merge_on_publish: bool = False
    """method lora: also publish the base model with the adapters merged into its weights,
    under model/merged/, loadable without peft."""


class TrainingResources(WireModel):
    """The Ray cluster the job runs on."""

    workers: int = Field(default=1, ge=1, le=4096)
    """Ray Train workers (one pod each)."""
    gpus_per_worker: int = Field(default=1, ge=0, le=16)
    """GPUs per worker; 0 trains on CPUs."""
    cpus_per_worker: int = Field(default=4, ge=1, le=512)
    """CPU cores per worker."""
    memory_per_worker: Quantity = "16Gi"
    """Memory per worker pod, as a Kubernetes quantity."""
    node_pool: NodePool = Field(default_factory=NodePool)
    """Where the worker pods are scheduled."""
    head: PodResources = Field(default_factory=PodResources)
    """Resources of the Ray head pod (CPU only)."""


TOKENIZER_WITH_PRETRAINED = (
    "tokenizer does not apply to model.pretrained: the pretrained model's own tokenizer is used; "
    "remove tokenizer"
)
FINETUNE_WITHOUT_PRETRAINED = "finetune applies only to model.pretrained; remove it or set that"
QUEUED_AND_SUSPENDED = (
    "suspend does not apply with scheduling.queueName: Kueue decides when a queued job runs; "
    "hold it in Kueue (stop its LocalQueue or deactivate its Workload), or remove the queue"
)
CHECKPOINTING_WITHOUT_PRETRAINED = "training.gradientCheckpointing applies only to model.pretrained"
_PRETRAINED = "has(self.model) && has(self.model.pretrained)"


class LLMTrainingJobSpec(WireModel):
    """Desired state of an LLMTrainingJob."""

    model_config = cel_rules(
        (
            "!has(self.scheduling) || !has(self.scheduling.queueName) || "
            "!has(self.suspend) || !self.suspend",
            QUEUED_AND_SUSPENDED,
        ),
        (f"!({_PRETRAINED}) || !has(self.tokenizer)", TOKENIZER_WITH_PRETRAINED),
        (f"{_PRETRAINED} || !has(self.finetune)", FINETUNE_WITHOUT_PRETRAINED),
        Cel(
            f"{_PRETRAINED} || !has(self.dataset.format) || "
            f"!(self.dataset.format in {list(EXAMPLE_FORMATS)})",
            "this dataset.format needs model.pretrained",
            f"'dataset.format ' + {cel_literal_of('self.dataset.format', EXAMPLE_FORMATS)} + "
            "' needs model.pretrained (a tokenizer with a chat template and a model that knows "
            "language); use text, jsonl or parquet to train from scratch'",
        ),
        (
            f"{_PRETRAINED} || !has(self.training.gradientCheckpointing) || "
            "!self.training.gradientCheckpointing",
            CHECKPOINTING_WITHOUT_PRETRAINED,
        ),
    )

    model: ModelSpec = Field(default_factory=ModelSpec)
    """The model to train."""
    tokenizer: TokenizerSpec | None = None
    """How text becomes tokens for a model trained from scratch (default: byte-level BPE of
    8192 tokens). Not allowed with model.pretrained, whose tokenizer is used."""
    finetune: FinetuneSpec | None = None
    """How model.pretrained is fine-tuned (default: LoRA of rank 8 on the attention
    projections)."""
    dataset: DatasetSpec
    """The text to train on."""
    storage: StorageSpec = Field(default_factory=StorageSpec)
    """Object-storage endpoint and credentials for every s3:// URI of this job."""
    training: TrainingSpec
    """The optimization run."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Evaluation schedule and samples."""
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    """Checkpoint schedule and retention."""
    export: ExportSpec = Field(default_factory=ExportSpec)
    """Formats the published model is exported to, in the same run (ONNX: <output>/onnx/)."""
    resources: TrainingResources = Field(default_factory=TrainingResources)
    """The Ray cluster the job runs on."""
    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Runtime container image. Defaults to the operator's LLMKUBE_RUNTIME_IMAGE."""
    output: StorageUri
    """Prefix that receives progress, metrics, checkpoints, each published model under
    versions/ and model/, which points at the newest."""
    restart_policy: Literal["resume", "restart"] = "resume"
    """What a run does when its output holds another run's work. resume: carry on from
    checkpoints made with the same model and data, or finish at once when a run with these very
    settings published the model; refuse a run with other settings. restart: a run with other
    settings starts over; the old run's checkpoints, progress and metrics are deleted, its
    published versions stay, and model/ moves to the new model once it is published."""
    backoff_limit: int = Field(default=3, ge=0, le=100)
    """Worker failures tolerated (each resumes from the last checkpoint) before the job fails."""
    suspend: bool = False
    """Stop the Ray cluster now and resume later from the last checkpoint."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail the job if it runs longer than this."""
    scheduling: Scheduling = Field(default_factory=Scheduling)
    """Queue the job in Kueue: it runs once admitted, and resumes from its last checkpoint
    when re-admitted after a preemption."""

    @model_validator(mode="after")
    def _pretrained_fits(self) -> Self:
        if self.scheduling.queue_name is not None and self.suspend:
            raise invalid(QUEUED_AND_SUSPENDED)
        pretrained = self.model.pretrained is not None
        if pretrained and self.tokenizer is not None:
            raise invalid(TOKENIZER_WITH_PRETRAINED)
        if not pretrained and self.finetune is not None:
            raise invalid(FINETUNE_WITHOUT_PRETRAINED)
        if not pretrained and self.dataset.format in EXAMPLE_FORMATS:
            raise invalid(
                "dataset.format {format} needs model.pretrained (a tokenizer with a chat "
                "template and a model that knows language); use text, jsonl or parquet to "
                "train from scratch",
                format=self.dataset.format,
            )
        if not pretrained and self.training.gradient_checkpointing:
            raise invalid(CHECKPOINTING_WITHOUT_PRETRAINED)
        return self

    def resolved_finetune(self) -> FinetuneSpec | None:
        """The fine-tuning settings with every default filled in; None training from scratch."""
        if self.model.pretrained is None:
            return None
        finetune = self.finetune or FinetuneSpec()
        return finetune.model_copy(
            update={
                "lora": finetune.lora.model_copy(update={"alpha": finetune.lora.resolved_alpha()})
            }
        )

    @model_validator(mode="after")
    def _output_outside_dataset(self) -> Self:
        if normalized_prefix(self.output).startswith(normalized_prefix(self.dataset.source)):
            raise invalid(
                "output {output} lies inside dataset.source {source}: the job would read its own "
                "checkpoints as training text; choose another prefix",
                output=self.output,
                source=self.dataset.source,
            )
        return self


TrainingPhase = Literal["Pending", "Queued", "Running", "Succeeded", "Failed", "Suspended"]


class TrainingProgress(StatusModel):
    """How far training has come."""

    step: int = 0
    """Optimizer steps done."""
    total_steps: int | None = None
    """Optimizer steps planned."""
    percent: float | None = None
    """step / totalSteps as a percentage."""
    eta_seconds: float | None = None
    """Estimated seconds until training ends."""
    summary: str | None = None
    """Human-readable progress, e.g. 500/2000 (25%)."""


class TrainingMetrics(StatusModel):
    """The latest training and evaluation numbers."""

    train_loss: float | None = None
    """Latest training loss."""
    eval_loss: float | None = None
    """Latest validation loss."""
    perplexity: float | None = None
    """exp(evalLoss)."""
    accuracy: float | None = None
    """Next-token accuracy on validation data."""
    tokens_per_second: float | None = None
    """Training throughput over all workers."""


class CheckpointStatus(StatusModel):
    """The newest checkpoint."""

    uri: str
    """Where it is."""
    step: int
    """The optimizer step it was taken at."""


class PublishedModel(StatusModel):
    """The model artifact this job published."""

    uri: str
    """URI of the model/ folder; an LLMDeployment's model.uri can point here."""
    version: str | None = None
    """The version model/ points at (a digest of the model's files, under versions/)."""


class FinetuneStatus(StatusModel):
    """What a fine-tune of a pretrained model trains."""

    base: str
    """URI of the pretrained model."""
    method: Literal["full", "lora"]
    """full or lora."""
    parameters: int | None = None
    """Parameters of the model (base and adapters), once training reported them."""
    trainable_parameters: int | None = None
    """Parameters that train, once training reported them."""
    summary: str
    """For kubectl get, e.g. lora, 0.68% trainable."""


class LLMTrainingJobStatus(StatusModel):
    """Observed state of an LLMTrainingJob."""

    phase: TrainingPhase | None = None
    """Pending, Queued (in Kueue), Running, Succeeded, Failed or Suspended."""
    conditions: list[Condition] = Field(default_factory=list)
    """Detailed conditions, with reasons a human can act on."""
    observed_generation: int | None = None
    """The metadata.generation the status describes."""
    ray_job_name: str | None = None
    """Name of the KubeRay RayJob running this job."""
    start_time: str | None = None
    """When training started (RFC 3339)."""
    completion_time: str | None = None
    """When the job finished (RFC 3339)."""
    progress: TrainingProgress | None = None
    """How far training has come."""
    metrics: TrainingMetrics | None = None
    """Latest loss, evaluation and throughput numbers."""
    checkpoint: CheckpointStatus | None = None
    """The newest checkpoint."""
    model: PublishedModel | None = None
    """The published model artifact, once the job succeeded."""
    finetune: FinetuneStatus | None = None
    """The pretrained model fine-tuned and how (fine-tunes only)."""
    retries: int = 0
    """Times the run was restarted after a failure."""
    message: str | None = None
    """The latest thing a human should know."""
    waiting_for: str | None = None
    """While pending: what the scheduler cannot find for the job's Ray pods (how many GPUs,
    CPUs and how much memory, on which nodes), and what to change."""


class LLMTrainingJob(WireModel):
    """Preprocess a dataset, train a GPT-style model or fine-tune a pretrained one with Ray
    Train, evaluate, checkpoint and publish it to object storage."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["llmkube.io/v1alpha1"] = GROUP_VERSION
    """llmkube.io/v1alpha1"""
    kind: Literal["LLMTrainingJob"] = "LLMTrainingJob"
    """LLMTrainingJob"""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: LLMTrainingJobSpec
    """Desired state."""
    status: LLMTrainingJobStatus | None = None
    """Observed state, written by the operator."""
