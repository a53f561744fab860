"""Spec and status pieces both custom resources use: storage, node pools, conditions, metadata."""

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from llmkube.api.base import NAME_PATTERN, KubernetesName, Quantity, StatusModel, WireModel

__all__ = [
    "Condition",
    "CredentialsSecret",
    "NodePool",
    "ObjectMeta",
    "PodResources",
    "Scheduling",
    "StorageSpec",
    "Toleration",
]


class ObjectMeta(WireModel):
    """Standard Kubernetes object metadata (only the fields llmkube reads; the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    name: KubernetesName
    """Name of the object, unique in its namespace."""
    namespace: str | None = None
    """Namespace of the object."""
    uid: str | None = None
    """Unique ID the apiserver assigned."""
    generation: int | None = None
    """Sequence number of the desired state (spec)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the object."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the object."""


class CredentialsSecret(WireModel):
    """A Secret in the resource's namespace holding S3 credentials.

    The operator injects them into the Ray pods as environment variables; they never appear in a
    ConfigMap or in the run config.
    """

    name: KubernetesName
    """Name of the Secret."""
    access_key_id_key: str = Field(default="AWS_ACCESS_KEY_ID", min_length=1)
    """Key in the Secret holding the access key ID."""
    secret_access_key_key: str = Field(default="AWS_SECRET_ACCESS_KEY", min_length=1)
    """Key in the Secret holding the secret access key."""


class StorageSpec(WireModel):
    """Where object storage (MinIO or S3) is and how to authenticate to it."""

    endpoint: str | None = Field(default=None, min_length=1, max_length=512)
    """S3 endpoint, e.g. minio.storage.svc:9000 or https://s3.eu-west-1.amazonaws.com.

    Empty means the operator's default endpoint (LLMKUBE_S3_ENDPOINT). Not used for file:// URIs.
    """
    region: str | None = Field(default=None, min_length=1, max_length=64)
    """S3 region; MinIO ignores it."""
    insecure: bool = False
    """Talk plain HTTP instead of HTTPS to the endpoint (in-cluster MinIO without TLS)."""
    credentials_secret: CredentialsSecret | None = None
    """Secret with the S3 access key pair. Empty means anonymous access or ambient credentials."""


class Toleration(WireModel):
    """A Kubernetes toleration, copied to the Ray pods so they can land on tainted GPU nodes."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key to tolerate; empty with operator Exists tolerates every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value; Equal matches `value`."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value to match when operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """How long a NoExecute taint is tolerated before eviction."""


class NodePool(WireModel):
    """Which nodes the GPU pods run on."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    """Node labels the pods require."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Tolerations for tainted (typically GPU) nodes."""
    affinity: dict[str, Any] | None = None
    """A Kubernetes Affinity object, passed through unchanged."""
    accelerator: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
    )
    """Shortcut for the node label nvidia.com/gpu.product (set by NVIDIA GPU feature discovery),
    e.g. NVIDIA-H100-80GB-HBM3."""


QueueName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=1, max_length=63)]
"""A Kueue object's name, also a label value (hence at most 63 characters)."""


class Scheduling(WireModel):
    """Admission through Kueue (kueue.sigs.k8s.io). The operator only labels the RayJob or
    RayService; Kueue decides when it runs (it suspends it until admitted, and may preempt it)."""

    queue_name: QueueName | None = None
    """The LocalQueue in this namespace to submit to (label kueue.x-k8s.io/queue-name)."""
    priority_class_name: QueueName | None = None
    """A Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class); higher priority
    workloads are admitted first and may preempt lower ones."""


class PodResources(WireModel):
    """CPU and memory of a Ray head pod."""

    cpus: int = Field(default=2, ge=1, le=256)
    """CPU cores requested."""
    memory: Quantity = "4Gi"
    """Memory requested, as a Kubernetes quantity."""


class Condition(StatusModel):
    """A status condition in the shape of metav1.Condition."""

    type: str
    """Condition type, e.g. Ready."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str
    """One CamelCase word a program can match, e.g. InvalidSpec."""
    message: str = ""
    """What happened and what to do about it, for a human."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed from."""
