"""LLMDeployment: serve a model with Ray Serve behind an OpenAI-compatible API, and autoscale it."""

from typing import Annotated, Literal, Self, get_args

from pydantic import ConfigDict, Field, StringConstraints, ValidationInfo, model_validator

from llmkube.api.base import (
    GROUP_VERSION,
    LABEL_PATTERN,
    Cel,
    KubernetesName,
    Quantity,
    StatusModel,
    StorageUri,
    WireModel,
    cel_default,
    cel_literal_of,
    cel_rules,
    invalid,
    on_cluster,
)
from llmkube.api.common import Condition, NodePool, ObjectMeta, Scheduling, StorageSpec

JobKind = Literal["LLMTrainingJob", "LLMTuningJob"]


class TrainingJobRef(WireModel):
    """A job in the same namespace that publishes a model: an LLMTrainingJob, or an
    LLMTuningJob (its best trial's model)."""

    name: KubernetesName
    """Name of the job whose published model is served."""
    kind: JobKind = "LLMTrainingJob"
    """LLMTrainingJob, or LLMTuningJob."""


AdapterName = Annotated[str, StringConstraints(pattern=LABEL_PATTERN, min_length=1, max_length=63)]
MAX_ADAPTERS = 16


def base_model_id(deployment: str) -> str:
    """The API model id of the base model, when the deployment's own model is a LoRA adapter
    (the deployment's name then means base + that adapter)."""
    return f"{deployment}-base"


class AdapterSource(WireModel):
    """A LoRA adapter served on top of the deployment's model, chosen per request by name."""

    model_config = cel_rules(
        Cel(
            "has(self.trainingJobRef) != has(self.uri)",
            "set exactly one of trainingJobRef or uri",
            "'adapter ' + self.name + ': set exactly one of trainingJobRef or uri (found ' + "
            "(has(self.uri) ? 'both' : 'neither') + ')'",
        )
    )

    name: AdapterName
    """The model id clients send to use this adapter (a DNS label)."""
    training_job_ref: TrainingJobRef | None = None
    """Serve the adapter this LoRA LLMTrainingJob publishes, once it succeeds."""
    uri: StorageUri | None = None
    """Serve the adapter folder (adapter_config.json, adapter_model.safetensors) at this URI."""

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if (self.training_job_ref is None) == (self.uri is None):
            raise invalid(
                "adapter {name}: set exactly one of trainingJobRef or uri (found {found})",
                name=self.name,
                found="both" if self.uri is not None else "neither",
            )
        return self


ADAPTER_NAMES_REPEAT = "model.adapters: each name may appear once"


class DeploymentModel(WireModel):
    """Which model to serve: the output of a training job, or an artifact URI; and LoRA
    adapters on top of it."""

    model_config = cel_rules(
        Cel(
            "has(self.trainingJobRef) != has(self.uri)",
            "set exactly one of model.trainingJobRef or model.uri",
            "'set exactly one of model.trainingJobRef or model.uri (found ' + "
            "(has(self.uri) ? 'both' : 'neither') + ')'",
        ),
        (
            "!has(self.adapters) || self.adapters.all(a, self.adapters.exists_one(b, "
            "b.name == a.name))",
            ADAPTER_NAMES_REPEAT,
        ),
    )

    training_job_ref: TrainingJobRef | None = None
    """Serve what this LLMTrainingJob publishes; waits until it succeeds and rolls out each new
    model it publishes. A LoRA job's adapter is served on the model it was trained on."""
    uri: StorageUri | None = None
    """Serve the model at this URI: a published model/ folder, an imported Hugging Face model
    or a LoRA adapter folder."""
    adapters: list[AdapterSource] = Field(default_factory=list, max_length=MAX_ADAPTERS)
    """LoRA adapters served on the same base, each under its own model id; requests for
    different adapters share batches. Adding or removing one reaches running replicas without
    a restart."""

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Self:
        if (self.training_job_ref is None) == (self.uri is None):
            raise invalid(
                "set exactly one of model.trainingJobRef or model.uri (found {found})",
                found="both" if self.uri is not None else "neither",
            )
        names = [adapter.name for adapter in self.adapters]
        repeated = [name for name in names if names.count(name) > 1]
        if repeated:
            raise invalid(ADAPTER_NAMES_REPEAT + "; repeated: {names}", names=", ".join(repeated))
        return self


MetricType = Literal["inflightRequests", "queueDepth", "tokensPerSecond", "ttftP95", "custom"]

# Targets that make sense without knowing the model or hardware; the others must be given.
DEFAULT_TARGETS: dict[str, float] = {"inflightRequests": 8.0, "queueDepth": 4.0}


CUSTOM_NEEDS_QUERY = "metric type custom needs a PromQL query in autoscaling.metric.query"
DEFAULT_METRIC: MetricType = "inflightRequests"
_METRIC_TYPE = cel_default("type", DEFAULT_METRIC)
_METRIC_NAME = cel_literal_of(_METRIC_TYPE, get_args(MetricType))


class AutoscalingMetric(WireModel):
    """The Prometheus metric replicas are scaled on, and the value per replica to aim for."""

    model_config = cel_rules(
        (f"{_METRIC_TYPE} != 'custom' || has(self.query)", CUSTOM_NEEDS_QUERY),
        Cel(
            f"{_METRIC_TYPE} == 'custom' || !has(self.query)",
            "autoscaling.metric.query only applies to type custom",
            f"'autoscaling.metric.query only applies to type custom; ' + {_METRIC_NAME} + ' has "
            "a built-in query. Remove query or set type: custom'",
        ),
        Cel(
            f"has(self.target) || {_METRIC_TYPE} in {list(DEFAULT_TARGETS)}",
            "autoscaling.metric.target is required for this metric type",
            f"'autoscaling.metric.target is required for metric type ' + {_METRIC_NAME} + ' (no "
            "default fits every model and machine)'",
        ),
    )

    type: MetricType = DEFAULT_METRIC
    """inflightRequests, queueDepth, tokensPerSecond (generated), ttftP95 (seconds) or custom."""
    target: float | None = Field(default=None, gt=0.0)
    """Desired value per replica (for ttftP95: the latency to stay under). Defaults: 8 for
    inflightRequests, 4 for queueDepth; required for the other types."""
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    """PromQL returning one value for the whole deployment (type custom only)."""

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.type == "custom" and self.query is None:
            raise invalid(CUSTOM_NEEDS_QUERY)
        if self.type != "custom" and self.query is not None:
            raise invalid(
                "autoscaling.metric.query only applies to type custom; {type} has a built-in "
                "query. Remove query or set type: custom",
                type=self.type,
            )
        if self.target is None and self.type not in DEFAULT_TARGETS:
            raise invalid(
                "autoscaling.metric.target is required for metric type {type} (no default fits "
                "every model and machine)",
                type=self.type,
            )
        return self

    def resolved_target(self) -> float:
        return self.target if self.target is not None else DEFAULT_TARGETS[self.type]


class PrometheusSource(WireModel):
    """The Prometheus server the autoscaler queries."""

    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=1024)
    """Base URL, e.g. http://prometheus-operated.monitoring:9090. Defaults to the operator's
    LLMKUBE_PROMETHEUS_URL."""


class ScalingRule(WireModel):
    """How quickly replicas change in one direction."""

    stabilization_seconds: int = Field(ge=0, le=86400)
    """The desired count must hold for this long before it is applied (prevents flapping)."""
    max_step: int = Field(ge=1, le=100)
    """Most replicas added or removed by one decision."""


DEFAULT_MIN_REPLICAS, DEFAULT_MAX_REPLICAS = 1, 4
MIN_ABOVE_MAX = "autoscaling.minReplicas exceeds autoscaling.maxReplicas"
_MIN_REPLICAS = cel_default("minReplicas", DEFAULT_MIN_REPLICAS)
_MAX_REPLICAS = cel_default("maxReplicas", DEFAULT_MAX_REPLICAS)


class AutoscalingSpec(WireModel):
    """Scale replicas from a Prometheus metric."""

    model_config = cel_rules((f"{_MIN_REPLICAS} <= {_MAX_REPLICAS}", MIN_ABOVE_MAX))

    enabled: bool = False
    """Let the operator drive spec.replicas. Leave off to drive /scale with an HPA or KEDA."""
    min_replicas: int = Field(default=DEFAULT_MIN_REPLICAS, ge=0, le=100)
    """Fewest replicas."""
    max_replicas: int = Field(default=DEFAULT_MAX_REPLICAS, ge=1, le=100)
    """Most replicas."""
    metric: AutoscalingMetric = Field(default_factory=AutoscalingMetric)
    """What to scale on."""
    prometheus: PrometheusSource = Field(default_factory=PrometheusSource)
    """Where the metric is queried."""
    interval_seconds: int = Field(default=15, ge=1, le=3600)
    """How often the metric is evaluated."""
    tolerance: float = Field(default=0.1, ge=0.0, lt=1.0)
    """No change while metric/target is within 1 ± tolerance."""
    scale_up: ScalingRule = Field(
        default_factory=lambda: ScalingRule(stabilization_seconds=30, max_step=4)
    )
    """Scale-up behaviour. Defaults: 30 s stabilization, up to 4 replicas a step."""
    scale_down: ScalingRule = Field(
        default_factory=lambda: ScalingRule(stabilization_seconds=300, max_step=1)
    )
    """Scale-down behaviour. Defaults: 300 s stabilization, 1 replica a step."""

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise invalid(
                MIN_ABOVE_MAX + " ({low} > {high})",
                low=self.min_replicas,
                high=self.max_replicas,
            )
        return self


class ApiKeySecret(WireModel):
    """A Secret key holding the API key clients must send as a Bearer token."""

    name: KubernetesName
    """Name of the Secret."""
    key: str = Field(default="apiKey", min_length=1)
    """Key in the Secret."""


AUTHENTICATION_REQUIRED = (
    "serving.apiKeySecret is required on a cluster: name the Secret holding the API key(s), or "
    "set serving.allowUnauthenticated: true to let anyone who reaches the Service use the model"
)
KEY_OR_OPEN = "set serving.apiKeySecret or serving.allowUnauthenticated, not both"
MAX_REQUEST_BYTES = 64 * 1024 * 1024


class ServingSpec(WireModel):
    """Limits and behaviour of the OpenAI-compatible server."""

    model_config = cel_rules(
        (
            "!has(self.apiKeySecret) || !has(self.allowUnauthenticated)"
            " || !self.allowUnauthenticated",
            KEY_OR_OPEN,
        )
    )

    max_batch_size: int = Field(default=16, ge=1, le=1024)
    """Sequences decoded together in one replica (continuous batching)."""
    max_concurrent_requests: int = Field(default=64, ge=1, le=100_000)
    """Requests a replica accepts before answering 429 (running + queued)."""
    max_prompt_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    """Longest prompt accepted, in tokens. Defaults to the model's context length, at most 2048
    (each request's KV-cache slot holds maxPromptTokens + maxTokens)."""
    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    """Cap on max_tokens a request may ask for."""
    stream_interval: int = Field(default=1, ge=1, le=256)
    """Tokens per streamed chunk (the first token and the end are never held back). 1 sends each
    token as it comes; more sends fewer, larger chunks, which costs less CPU per token in the
    replica, the Serve proxy and the client: more throughput under load, coarser streaming."""
    api_key_secret: ApiKeySecret | None = None
    """Require an API key from this Secret (several keys, one per line, are all accepted: add the
    new key, move clients, remove the old one; running replicas see the change within a minute).
    Required on a cluster unless allowUnauthenticated is true."""
    allow_unauthenticated: bool = False
    """Serve without authentication, to anyone who can reach the Service. `llmkube run` serves
    a deployment without apiKeySecret this way, on 127.0.0.1 only."""
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, le=MAX_REQUEST_BYTES)
    """Largest request body accepted; bigger ones are answered 413 before they are read."""
    request_timeout_seconds: int = Field(default=600, ge=1, le=86_400)
    """A request still generating after this long is stopped and answered 504 (a stream ends
    with an error event)."""
    max_lora_rank: int = Field(default=64, ge=1, le=1024)
    """Adapters of a higher rank are not loaded (the status names them): the rank bounds the
    cost an adapter adds to every batch it is in."""

    @model_validator(mode="after")
    def _key_or_open(self) -> Self:
        if self.api_key_secret is not None and self.allow_unauthenticated:
            raise invalid(KEY_OR_OPEN)
        return self


class DeploymentResources(WireModel):
    """What each serving replica gets."""

    gpus_per_replica: int = Field(default=1, ge=0, le=16)
    """GPUs per replica; 0 serves on CPUs."""
    cpus_per_replica: int = Field(default=2, ge=1, le=512)
    """CPU cores per replica."""
    memory_per_replica: Quantity = "8Gi"
    """Memory per replica, as a Kubernetes quantity."""
    node_pool: NodePool = Field(default_factory=NodePool)
    """Where the serving pods are scheduled."""


class RolloutSpec(WireModel):
    """How a new model or serving config replaces the running one."""

    strategy: Literal["NewCluster", "None"] = "NewCluster"
    """NewCluster: start a new Ray cluster, switch traffic when it is ready (zero downtime).
    None: update the running cluster in place."""


class MonitoringSpec(WireModel):
    """Prometheus scraping of the serving pods."""

    service_monitor: bool = True
    """Create a prometheus-operator ServiceMonitor for the serving metrics."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Extra labels on the ServiceMonitor, to match your Prometheus' serviceMonitorSelector."""
    interval_seconds: int = Field(default=15, ge=1, le=3600)
    """Scrape interval."""


QUEUED_AND_AUTOSCALED = (
    "autoscaling.enabled does not apply with scheduling.queueName: Kueue admits a fixed number "
    "of replicas; set replicas, or remove the queue"
)


class LLMDeploymentSpec(WireModel):
    """Desired state of an LLMDeployment."""

    model_config = cel_rules(
        (
            "has(self.serving) && (has(self.serving.apiKeySecret)"
            " || (has(self.serving.allowUnauthenticated) && self.serving.allowUnauthenticated))",
            AUTHENTICATION_REQUIRED,
        ),
        (
            "!has(self.scheduling) || !has(self.scheduling.queueName) || "
            "!has(self.autoscaling) || !has(self.autoscaling.enabled) || "
            "!self.autoscaling.enabled",
            QUEUED_AND_AUTOSCALED,
        ),
    )

    model: DeploymentModel
    """What to serve."""
    storage: StorageSpec = Field(default_factory=StorageSpec)
    """Object-storage endpoint and credentials for the model artifact."""
    replicas: int = Field(default=1, ge=0, le=100)
    """Serving replicas (the /scale subresource: kubectl scale, HPA or KEDA can set it)."""
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    """Scale replicas from a Prometheus metric."""
    serving: ServingSpec = Field(default_factory=ServingSpec)
    """Server limits and authentication."""
    resources: DeploymentResources = Field(default_factory=DeploymentResources)
    """What each replica gets."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """How changes roll out."""
    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Runtime container image. Defaults to the operator's LLMKUBE_RUNTIME_IMAGE."""
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    """Prometheus scraping."""
    scheduling: Scheduling = Field(default_factory=Scheduling)
    """Queue the deployment's Ray cluster in Kueue: it starts once admitted."""

    @model_validator(mode="after")
    def _queued_at_a_fixed_size(self) -> Self:
        if self.scheduling.queue_name is not None and self.autoscaling.enabled:
            raise invalid(QUEUED_AND_AUTOSCALED)
        return self

    @model_validator(mode="after")
    def _authenticated_on_a_cluster(self, info: ValidationInfo) -> Self:
        keyed = self.serving.api_key_secret is not None
        if on_cluster(info) and not keyed and not self.serving.allow_unauthenticated:
            raise invalid(AUTHENTICATION_REQUIRED)
        return self


DeploymentPhase = Literal[
    "Pending", "WaitingForModel", "Queued", "Deploying", "Ready", "Degraded", "Failed"
]


class ServedModel(StatusModel):
    """The model being served."""

    uri: str | None = None
    """URI of the served model artifact."""
    training_job: str | None = None
    """The LLMTrainingJob it came from, if any."""
    version: str | None = None
    """Identifies the published model by its files' content (by URI and publication time while
    storage cannot be read); a new version rolls out, the same bytes published again do not."""
    folder: str | None = None
    """The folder the replicas load: a job's model/ resolved to the version it points at, so
    that every replica of a rollout serves that version (unset while storage cannot be read:
    each replica resolves uri itself)."""


AdapterState = Literal["Ready", "Waiting", "Refused"]


class AdapterStatus(StatusModel):
    """One of spec.model.adapters, as the operator last saw it."""

    name: str
    """Its model id."""
    uri: str | None = None
    """The adapter folder it resolved to."""
    state: AdapterState
    """Ready: passed to the replicas; Waiting: its training job has not published it yet;
    Refused: it cannot be served on this deployment's model (message says why)."""
    message: str | None = None
    """Why it waits or was refused."""


class ScaleDecision(StatusModel):
    """One autoscaler decision."""

    time: str
    """When it was made (RFC 3339)."""
    metric_value: float | None = None
    """The metric value it was based on."""
    from_replicas: int
    """Replicas before."""
    to_replicas: int
    """Replicas after."""
    reason: str
    """Why, for a human."""


class AutoscalingStatus(StatusModel):
    """What the autoscaler last saw and did."""

    metric_value: float | None = None
    """The latest metric value."""
    last_scale_time: str | None = None
    """When replicas last changed (RFC 3339)."""
    history: list[ScaleDecision] = Field(default_factory=list)
    """The latest decisions, newest last."""


class LLMDeploymentStatus(StatusModel):
    """Observed state of an LLMDeployment."""

    phase: DeploymentPhase | None = None
    """Pending, WaitingForModel, Queued (in Kueue), Deploying, Ready, Degraded or Failed."""
    conditions: list[Condition] = Field(default_factory=list)
    """Detailed conditions, with reasons a human can act on."""
    observed_generation: int | None = None
    """The metadata.generation the status describes."""
    endpoint: str | None = None
    """In-cluster base URL of the OpenAI-compatible API."""
    model: ServedModel | None = None
    """The model being rolled out or served (its version is the desired one)."""
    adapters: list[AdapterStatus] = Field(default_factory=list)
    """Each LoRA adapter of spec.model.adapters: ready, waiting or refused."""
    live_model_version: str | None = None
    """The model version the active Ray cluster serves; differs from model.version during a
    rollout."""
    replicas: int = 0
    """Replicas running (the /scale subresource reads this)."""
    ready_replicas: int = 0
    """Replicas ready to answer."""
    desired_replicas: int | None = None
    """Replicas asked for by spec or the autoscaler."""
    selector: str | None = None
    """Label selector of the serving pods (the /scale subresource reads this)."""
    autoscaling: AutoscalingStatus | None = None
    """Autoscaler state."""
    ray_service_name: str | None = None
    """Name of the KubeRay RayService."""
    waiting_for: str | None = None
    """While a Ray cluster starts (the first, or a rollout's new one): why the scheduler cannot
    place some of its pods, and what to change."""
    message: str | None = None
    """The latest thing a human should know."""


ADAPTER_TAKES_OWN_ID = (
    "spec.model.adapters: an adapter name is the model id of the deployment's own model (its "
    "name, or its name followed by -base); pick another"
)
_OWN_ID = "a.name != self.metadata.name && a.name != self.metadata.name + '-base'"


class LLMDeployment(WireModel):
    """Serve a model with Ray Serve behind an OpenAI-compatible API, with Prometheus metrics
    and autoscaling."""

    model_config = ConfigDict(
        extra="ignore",
        # At the root, where a CRD's rules may read metadata.name.
        **cel_rules(
            (
                f"!has(self.spec.model.adapters) || self.spec.model.adapters.all(a, {_OWN_ID})",
                ADAPTER_TAKES_OWN_ID,
            )
        ),
    )

    api_version: Literal["llmkube.io/v1alpha1"] = GROUP_VERSION
    """llmkube.io/v1alpha1"""
    kind: Literal["LLMDeployment"] = "LLMDeployment"
    """LLMDeployment"""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: LLMDeploymentSpec
    """Desired state."""
    status: LLMDeploymentStatus | None = None
    """Observed state, written by the operator."""

    @model_validator(mode="after")
    def _adapter_ids_free(self) -> Self:
        taken = {self.metadata.name, base_model_id(self.metadata.name)}
        clashing = [a.name for a in self.spec.model.adapters if a.name in taken]
        if clashing:
            raise invalid(ADAPTER_TAKES_OWN_ID + ": {names}", names=", ".join(clashing))
        return self
