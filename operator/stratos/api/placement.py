"""Where a DistillationJob runs: candidate nodes, serving, storage and retries.

Part of the spec (see stratos.api.spec); split out to keep modules small.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from kubernetes.utils import parse_quantity
from pydantic import Field, field_validator, model_validator

from stratos.api.base import ApiModel, CelRule, cel_config, cel_schema
from stratos.api.candidates import SecretKeyRef
from stratos.api.durations import parse_duration
from stratos.api.serving import AutoscalingSpec, HttpRouteSpec, IngressSpec
from stratos.api.types import Duration, Quantity, ResourceName, StorageUri

# ------------------------------------------------------------------------------------------ servers

EXISTS_HAS_NO_VALUE = CelRule(
    rule="self.operator != 'Exists' || !has(self.value) || self.value == ''",
    message="value must be empty when operator is Exists",
    field_path=".value",
)
EMPTY_KEY_NEEDS_EXISTS = CelRule(
    rule="(has(self.key) && self.key != '') || self.operator == 'Exists'",
    message="operator must be Exists when key is empty",
    field_path=".operator",
)


class Toleration(ApiModel):
    """A taint the job tolerates: tainted nodes stay candidates, and the job's pods tolerate the taint."""

    model_config = cel_config(EXISTS_HAS_NO_VALUE, EMPTY_KEY_NEEDS_EXISTS)

    key: str | None = Field(
        None,
        max_length=317,
        pattern=r"^((([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)/)?"
        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Taint key (a qualified name, like a label key); empty with operator Exists matches all.",
    )
    operator: Literal["Exists", "Equal"] = Field(
        "Equal", description="Exists or Equal (the value must match)."
    )
    value: str | None = Field(
        None,
        max_length=63,
        pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
        description="Taint value for operator Equal (a label value).",
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; unset matches every effect."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        EXISTS_HAS_NO_VALUE.check(self.operator != "Exists" or not self.value)
        EMPTY_KEY_NEEDS_EXISTS.check(bool(self.key) or self.operator == "Exists")
        return self


class ServersSpec(ApiModel):
    """Which nodes may run the job and how the Pareto Front Grid trades cost, latency and hardware."""

    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict, max_length=32, description="Only nodes with all these labels are candidates."
    )
    cost_window: float = Field(
        0.2, gt=0, le=1000, description="gamma: width of one cost interval of the grid, USD per hour."
    )
    region_latency_ms: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        max_length=64,
        description="Latency to the users per region (topology.kubernetes.io/region), milliseconds; "
        "a node's stratos.io/latency-ms label or annotation takes precedence.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=16, description="Taints the job tolerates."
    )
    min_gpu_memory_gib: float | None = Field(
        None,
        ge=0,
        le=4096,
        description="Extra floor on memory per GPU (GiB), on top of what the students need.",
    )
    runners_up: int = Field(3, ge=0, le=20, description="How many runner-up nodes status records.")
    rule: Literal["joint", "paper"] = Field(
        "joint",
        description="joint: probe every student that fits some feasible node, then choose the (node, "
        "student) pair with the highest weighted utility (requirements.weights) among the pairs that fit, "
        "meet T, R and the budget. paper: the node with the lowest cost coordinate of the Pareto Front "
        "Grid first, then the student by the paper's Eq. 2 on that node (reproduces the paper).",
    )
    node_loss_policy: Literal["Reselect", "Fail"] = Field(
        "Reselect",
        description="What happens when the chosen node disappears or stops taking work during training: "
        "Reselect (select a server again; training resumes from its last checkpoint on shared storage) or "
        "Fail (reason NodeLost). Before training the server is always selected again.",
    )


# ------------------------------------------------------------------------------- serving, storage

PVC_OR_URI = CelRule(rule="has(self.pvc) != has(self.uri)", message="exactly one of pvc or uri must be set")
#: Stage programs hand files to each other through a mounted volume; nothing reads an object store yet.
URI_UNSUPPORTED = CelRule(
    rule="!has(self.uri)",
    message="storage.uri is not supported yet (stages exchange files through a mounted volume): use "
    "storage.pvc, e.g. a claim of an S3/GCS CSI driver, or leave storage unset for the operator's default",
    field_path=".uri",
)
SUB_PATH_RELATIVE = CelRule(
    rule="!self.startsWith('/') && !self.split('/').exists(p, p == '..')",
    message="subPath must be a relative path without '..'",
)


class ResourceRequirements(ApiModel):
    """Compute resources of the serving container, as in a Pod spec."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, max_length=16, description="Minimum resources, e.g. cpu: 2, memory: 16Gi."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, max_length=16, description="Maximum resources, e.g. nvidia.com/gpu: 1."
    )


GPU_RESOURCE = "nvidia.com/gpu"


def _gpu_cel(block: str) -> str:
    """CEL: the block's nvidia.com/gpu, if set, is a whole number (at least 1 with vllm)."""
    value = f"string(self.resources.{block}['{GPU_RESOURCE}'])"
    return (
        f"!has(self.resources) || !has(self.resources.{block})"
        f" || !('{GPU_RESOURCE}' in self.resources.{block})"
        # isInteger() is false for 2000m (a scaled value), which Kubernetes takes as 2: compare the value.
        f" || (isQuantity({value}) && quantity({value}).asApproximateFloat()"
        f" == double(int(quantity({value}).asApproximateFloat()))"
        f" && quantity({value}).asApproximateFloat() >= (self.engine == 'vllm' ? 1.0 : 0.0))"
    )


GPU_LIMIT_WHOLE = CelRule(
    rule=_gpu_cel("limits"),
    message="resources.limits['nvidia.com/gpu'] must be a whole number of GPUs, at least 1 with the vllm "
    "engine",
    field_path=".resources.limits",
)
GPU_REQUEST_WHOLE = CelRule(
    rule=_gpu_cel("requests"),
    message="resources.requests['nvidia.com/gpu'] must be a whole number of GPUs, at least 1 with the vllm "
    "engine",
    field_path=".resources.requests",
)


def gpu_quantity(value: str | int | float) -> int | None:
    """A GPU count from a Kubernetes quantity ("1", "2000m", "1.0" -> 1, 2, 1); None unless whole."""
    try:
        amount = parse_quantity(value)
    except ValueError:
        return None
    return int(amount) if amount == amount.to_integral_value() else None


API_KEY_NEEDS_VLLM = CelRule(
    rule="self.engine == 'vllm' || !has(self.apiKeySecretRef)",
    message="apiKeySecretRef needs engine vllm: transformers serve has no API key option",
    field_path=".apiKeySecretRef",
    reason="FieldValueForbidden",
)
POD_MONITOR_NEEDS_VLLM = CelRule(
    rule="self.engine == 'vllm' || !self.podMonitor",
    message="podMonitor needs engine vllm: transformers serve has no /metrics",
    field_path=".podMonitor",
    reason="FieldValueForbidden",
)


class ServingSpec(ApiModel):
    """How the distilled model is served behind an OpenAI-compatible endpoint."""

    model_config = cel_config(GPU_LIMIT_WHOLE, GPU_REQUEST_WHOLE, API_KEY_NEEDS_VLLM, POD_MONITOR_NEEDS_VLLM)

    enabled: bool = Field(True, description="Deploy the trained student after a successful evaluation.")
    engine: Literal["vllm", "transformers"] = Field(
        "vllm", description="vllm (GPU) or transformers (CPU-capable, slower)."
    )
    replicas: int = Field(1, ge=0, le=16, description="Serving replicas.")
    max_model_len: int = Field(
        4096, ge=64, le=131072, description="Longest context the server accepts, tokens."
    )
    resources: ResourceRequirements | None = Field(
        None, description="Resources of the serving container; unset: derived from the chosen node."
    )
    expected_hours: float = Field(
        0.0,
        ge=0,
        le=1_000_000,
        description="Hours the served model is expected to run on the chosen node; with servers.rule joint "
        "its node cost counts in the expected total cost of each (node, student) pair.",
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="Secret key holding the API key clients must send (Authorization: Bearer KEY); "
        "vllm only (its VLLM_API_KEY). The operator's probe sends it too. Unset: no key is asked.",
    )
    ingress: IngressSpec | None = Field(None, description="Expose the endpoint through an Ingress.")
    http_route: HttpRouteSpec | None = Field(
        None, description="Expose the endpoint through a Gateway API HTTPRoute."
    )
    autoscaling: AutoscalingSpec | None = Field(
        None, description="Scale the serving replicas with a HorizontalPodAutoscaler (replaces replicas)."
    )
    pod_monitor: bool = Field(
        False,
        description="Create a Prometheus Operator PodMonitor scraping the server's /metrics (vllm only).",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        least = 1 if self.engine == "vllm" else 0
        for block, rule in (("limits", GPU_LIMIT_WHOLE), ("requests", GPU_REQUEST_WHOLE)):
            raw = getattr(self.resources, block).get(GPU_RESOURCE) if self.resources else None
            if raw is not None:
                count = gpu_quantity(raw)
                rule.check(count is not None and count >= least, detail=f"got {raw!r}")
        API_KEY_NEEDS_VLLM.check(self.engine == "vllm" or self.api_key_secret_ref is None)
        POD_MONITOR_NEEDS_VLLM.check(self.engine == "vllm" or not self.pod_monitor)
        return self


class PvcSource(ApiModel):
    """A PersistentVolumeClaim in the job's namespace."""

    claim_name: ResourceName = Field(description="Name of the PersistentVolumeClaim.")
    sub_path: str = Field(
        "",
        max_length=1024,
        description="Directory inside the volume for this job's files.",
        json_schema_extra=cel_schema(SUB_PATH_RELATIVE),
    )

    @field_validator("sub_path")
    @classmethod
    def _relative(cls, value: str) -> str:
        SUB_PATH_RELATIVE.check(not value.startswith("/") and ".." not in value.split("/"))
        return value


class StorageSpec(ApiModel):
    """Where datasets, adapters, checkpoints and evaluation results live: a PersistentVolumeClaim."""

    model_config = cel_config(PVC_OR_URI, URI_UNSUPPORTED)

    pvc: PvcSource | None = Field(
        None, description="A PersistentVolumeClaim mounted into every stage and the serving pods."
    )
    uri: StorageUri | None = Field(
        None,
        description="Reserved for object-store prefixes (s3://, gs://); refused until stages read them.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        PVC_OR_URI.check((self.pvc is None) != (self.uri is None))
        URI_UNSUPPORTED.check(self.uri is None)
        return self


class RetryPolicy(ApiModel):
    """How often a failed stage is retried before the job fails."""

    backoff_limit: int = Field(2, ge=0, le=10, description="Retries per stage Job (its backoffLimit).")
    start_timeout: Duration = Field(
        "15m",
        description="How long a stage pod may stay unstarted (unschedulable, image not pulled, a missing "
        "Secret, ConfigMap or PersistentVolumeClaim) before the job fails with the pod's own reason.",
    )

    @property
    def start_timeout_seconds(self) -> float:
        return parse_duration(self.start_timeout)
