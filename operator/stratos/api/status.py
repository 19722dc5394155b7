"""DistillationJob status: what the operator decided, why, and where the job stands.

One block per decision (server, teacher, strategy, student) records the winner, the other candidates
and the reason each lost, like the "Decision Reason" column of the paper's Table 2. Everything is
optional: the controller fills blocks in as stages finish. Assignments are validated, so a typo in
a phase or a negative count fails in the controller, not as a rejected status patch.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationInfo,
    model_validator,
)

from stratos.api.base import ApiModel

Phase = Literal[
    "Pending",
    "SelectingServer",
    "EvaluatingTeachers",
    "SelectingStudent",
    "Synthesizing",
    "Training",
    "Evaluating",
    "Deploying",
    "Serving",
    "Succeeded",
    "Suspended",
    "Failed",
]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]

#: metav1.Condition's reason format: CamelCase, starting with a letter.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)


def _rfc3339(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp (e.g. 2025-01-31T12:00:00Z)") from exc
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone; use e.g. 2025-01-31T12:00:00Z")
    return value


Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"}), AfterValidator(_rfc3339)]
"""An RFC 3339 timestamp with a zone, as Kubernetes writes them (2025-01-31T12:00:00Z)."""

NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


#: Validation context of a status read back from where it is kept (the API server, the local status file).
_STORED = "stratos.stored"


class StatusModel(ApiModel):
    """Base of status models: assignments are validated (the controller mutates status in place).

    What a model writes (``written()``) follows how it came to be. Built in code, a block is written
    whole: every field counts as set, so it writes what ``to_api()`` writes (empty lists and maps
    included, None left out). Read back with ``read()``, it writes what it was read with plus the fields
    assigned since (pydantic adds an assigned attribute to the fields-set), never a default nobody wrote.
    A list changed in place is not an assignment: assign a new list instead.
    """

    model_config = ConfigDict(validate_assignment=True)

    @model_validator(mode="wrap")
    @classmethod
    def _built_whole(cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo) -> Self:
        model = handler(data)
        # ``data`` is the model itself on an assignment, a mapping when built or read.
        if isinstance(data, Mapping) and not (info.context or {}).get(_STORED):
            model.__pydantic_fields_set__ = set(type(model).model_fields)
        return model

    @classmethod
    def read(cls, raw: Mapping[str, Any]) -> Self:
        """The model of a stored (camelCase) block; it writes back only the keys it was read with."""
        return cls.model_validate(raw, context={_STORED: True})

    def written(self) -> dict[str, Any]:
        """The block as it is to be stored: camelCase, JSON types, the fields set (see the class), no None."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)


#: The longest condition message metav1.Condition allows.
MAX_CONDITION_MESSAGE = 32768


class Condition(StatusModel):
    """A standard Kubernetes condition (metav1.Condition): one observed state of the job."""

    type: str = Field(
        max_length=316, pattern=CONDITION_TYPE_PATTERN, description="Condition type, e.g. Ready."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024, pattern=CONDITION_REASON_PATTERN, description="CamelCase reason for the status."
    )
    message: str = Field("", max_length=MAX_CONDITION_MESSAGE, description="Human-readable details.")
    last_transition_time: Timestamp = Field(description="When status last changed (RFC 3339).")
    observed_generation: NonNegInt | None = Field(
        None, description="spec generation the condition was set for."
    )


def next_condition(
    old: Condition | None,
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    *,
    now: str,
    observed_generation: int | None = None,
) -> Condition:
    """The condition that replaces ``old``: the one rule for every condition the operator writes.

    ``lastTransitionTime`` moves only when ``status`` changes (API convention), so re-writing the same
    verdict on every reconcile does not look like a flapping object; the message is cut to the longest
    metav1.Condition allows.
    """
    when = old.last_transition_time if old is not None and old.status == status else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message[:MAX_CONDITION_MESSAGE],
        last_transition_time=when,
        observed_generation=observed_generation,
    )


class GPUInfo(StatusModel):
    """The GPUs of a node."""

    model: str | None = Field(None, description="GPU model, as in the catalog (e.g. RTX 4090, H100).")
    count: NonNegInt | None = Field(None, description="GPUs on the node.")
    memory_gib: float | None = Field(None, ge=0, description="Memory per GPU, GiB.")


class ServerCandidate(StatusModel):
    """A node that was feasible but not chosen."""

    node: str = Field(description="Node name.")
    gpu: GPUInfo | None = Field(None, description="The node's GPUs.")
    hourly_cost: float | None = Field(None, description="Rental cost, USD per hour.")
    latency_ms: float | None = Field(None, description="Latency to the users, milliseconds.")
    cell: list[int] = Field(default_factory=list, description="Grid cell (cost, latency, hardware).")
    distance: float | None = Field(None, description="Normalised distance to the ideal point.")
    reason: str | None = Field(None, description="Why it was not chosen.")


class ServerDecision(StatusModel):
    """The server selector's decision (Pareto Front Grid)."""

    node: str | None = Field(None, description="Name of the chosen node.")
    gpu: GPUInfo | None = Field(None, description="GPUs of the chosen node.")
    hourly_cost: float | None = Field(None, description="Rental cost of the chosen node, USD per hour.")
    latency_ms: float | None = Field(
        None, description="Latency from the chosen node to the users, milliseconds."
    )
    region: str | None = Field(None, description="Region (topology.kubernetes.io/region) of the chosen node.")
    grid_size: NonNegInt | None = Field(
        None, description="K: intervals per objective, ceil(|C_best - C_worst| / gamma)."
    )
    cost_window: float | None = Field(None, description="gamma used for the grid, USD per hour.")
    cell: list[int] = Field(default_factory=list, description="Chosen grid cell (cost, latency, hardware).")
    pareto_cells: list[list[int]] = Field(default_factory=list, description="Cells of the Pareto Front Grid.")
    runners_up: list[ServerCandidate] = Field(default_factory=list, description="Best nodes not chosen.")
    candidates: NonNegInt | None = Field(None, description="Nodes considered.")
    feasible: NonNegInt | None = Field(None, description="Nodes that passed the hard constraints.")
    rejected: dict[str, NonNegInt] = Field(
        default_factory=dict, description="Nodes rejected per reason (reason -> count)."
    )
    reason: str | None = Field(None, description="Why this node was chosen.")


class TeacherCandidate(StatusModel):
    """One teacher's evaluation on the task sample."""

    name: str = Field(description="Teacher name.")
    accuracy: Fraction | None = Field(None, description="Share of the sample answered correctly (0..1).")
    samples: NonNegInt | None = Field(None, description="Samples evaluated.")
    correct: NonNegInt | None = Field(None, description="Samples answered correctly.")
    prompt_tokens: NonNegInt | None = Field(None, description="Prompt tokens spent.")
    completion_tokens: NonNegInt | None = Field(None, description="Completion tokens spent.")
    cost_usd: float | None = Field(None, ge=0, description="Cost of the evaluation, USD.")
    verdict: str | None = Field(None, description="Selected, or why not.")
    error: str | None = Field(None, description="Why the evaluation failed, if it did.")


class TeacherDecision(StatusModel):
    """The teacher selector's decision."""

    selected: str | None = Field(None, description="Name of the chosen teacher.")
    reason: str | None = Field(None, description="Why this teacher was chosen.")
    candidates: list[TeacherCandidate] = Field(default_factory=list, description="Every teacher's result.")


class StrategyDecision(StatusModel):
    """The distillation strategy selector's decision."""

    selected: Literal["alignment", "injection"] | None = Field(None, description="alignment or injection.")
    algorithm: Literal["sft-lora", "grpo", "white-box-kd", "dpo"] | None = Field(
        None, description="Training algorithm."
    )
    reason: str | None = Field(None, description="Why this strategy was chosen.")


class StudentCandidate(StatusModel):
    """One student's probe and estimates (paper Eq. 2)."""

    name: str = Field(description="Student name.")
    parameters: float | None = Field(None, ge=0, description="Parameter count.")
    accuracy: Fraction | None = Field(None, description="a: probe accuracy with the teacher's reasoning.")
    training_time_hours: float | None = Field(None, ge=0, description="t: estimated training time, hours.")
    tokens_per_second: float | None = Field(None, ge=0, description="r: estimated decode tokens/s.")
    training_memory_gib: float | None = Field(None, ge=0, description="Estimated LoRA training memory, GiB.")
    serving_memory_gib: float | None = Field(None, ge=0, description="Estimated serving memory, GiB.")
    score: float | None = Field(
        None, description="M: weighted score (paper rule); U of its best feasible pair (joint rule)."
    )
    verdict: str | None = Field(None, description="Selected, or why not.")
    kept: bool | None = Field(None, description="Joint rule: whether the probe rule kept the student.")
    probe_node: str | None = Field(None, description="Joint rule: the node the student was probed on.")
    best_node: str | None = Field(None, description="Joint rule: the node of its best feasible pair.")


class PairCost(StatusModel):
    """The expected total cost of a (node, student) pair, USD, by term."""

    training_usd: float | None = Field(None, description="Node price x estimated training hours.")
    evaluation_usd: float | None = Field(None, description="Node price x held-out evaluation hours.")
    hosting_usd: float | None = Field(None, description="Node price x serving.expectedHours.")
    synthesis_usd: float | None = Field(
        None, description="Teacher tokens for synthesis: targetSamples x tokens per answer / yield x price."
    )
    teacher_evaluation_usd: float | None = Field(None, description="Teacher tokens of the evaluations.")
    probes_usd: float | None = Field(None, description="Node hours of the student probes.")
    total_usd: float | None = Field(None, description="Sum of the terms.")


class PairCandidate(StatusModel):
    """A feasible (node, student) pair of the joint choice."""

    node: str = Field(description="Node name.")
    student: str = Field(description="Student name.")
    utility: float | None = Field(None, description="U: weighted normalised objectives (1 best).")
    accuracy: float | None = Field(None, description="The student's probe accuracy.")
    latency_ms: float | None = Field(None, description="The node's latency to the users, ms.")
    training_time_hours: float | None = Field(None, description="Estimated training time, hours.")
    tokens_per_second: float | None = Field(None, description="Estimated decode tokens/s.")
    hourly_cost: float | None = Field(None, description="The node's price, USD per hour.")
    expected_cost_usd: float | None = Field(None, description="Expected total cost, USD.")
    reason: str | None = Field(None, description="Why it lost to the chosen pair.")


class PairDecision(StatusModel):
    """The joint choice of node and student (servers.rule joint)."""

    node: str | None = Field(None, description="Chosen node.")
    student: str | None = Field(None, description="Chosen student.")
    utility: float | None = Field(None, description="U of the chosen pair.")
    accuracy: float | None = Field(None, description="Probe accuracy of the chosen student.")
    latency_ms: float | None = Field(None, description="Latency of the chosen node, ms.")
    training_time_hours: float | None = Field(None, description="Estimated training time, hours.")
    tokens_per_second: float | None = Field(None, description="Estimated decode tokens/s.")
    cost: PairCost | None = Field(None, description="Expected total cost, by term.")
    cost_breakdown: str | None = Field(None, description="The expected cost in words.")
    pairs: NonNegInt | None = Field(None, description="(node, student) pairs of kept students considered.")
    feasible_pairs: NonNegInt | None = Field(None, description="Pairs meeting T, R and the budget.")
    infeasible: dict[str, NonNegInt] = Field(
        default_factory=dict, description="Pairs left out per reason (reason -> count)."
    )
    runners_up: list[PairCandidate] = Field(
        default_factory=list,
        description="The best pair of every other student, then the next best pairs, each with the term "
        "that cost it most.",
    )
    fallback: str | None = Field(None, description="The fallback order in words.")


class StudentDecision(StatusModel):
    """The student selector's decision."""

    selected: str | None = Field(None, description="Name of the chosen student.")
    reason: str | None = Field(None, description="Why this student was chosen.")
    candidates: list[StudentCandidate] = Field(default_factory=list, description="Every student's result.")
    ranking: list[str] = Field(
        default_factory=list,
        description="Surviving students, best first: the order in which students are trained when the "
        "previous one misses minAccuracy on held-out data.",
    )
    rule: Literal["joint", "paper"] | None = Field(None, description="servers.rule the decision used.")
    pair: PairDecision | None = Field(
        None, description="Joint rule: the chosen (node, student) pair, its cost and the runners-up."
    )


class DataStatus(StatusModel):
    """The training data the synthesis stage produced."""

    uri: str | None = Field(None, description="Where the dataset is.")
    samples: NonNegInt | None = Field(None, description="Training examples in total.")
    real: NonNegInt | None = Field(None, description="Examples from the task's own data.")
    synthetic: NonNegInt | None = Field(None, description="Examples synthesised by the teacher.")
    rejected: NonNegInt | None = Field(None, description="Examples dropped by verification.")
    test_samples: NonNegInt | None = Field(
        None,
        description="Samples in the task's test split, counted by the synthesis program: what the held-out "
        "evaluation answers (its cost estimate counts them).",
    )


class TrainingStatus(StatusModel):
    """The training stage."""

    student: str | None = Field(None, description="Student being or last trained.")
    algorithm: str | None = Field(None, description="Algorithm used.")
    attempt: NonNegInt | None = Field(
        None, description="Which student attempt this is: 1 for the first choice, 2 for the next, ..."
    )
    adapter_uri: str | None = Field(None, description="Where the trained adapter is.")
    merged_uri: str | None = Field(None, description="Where the merged weights are, when they were saved.")
    steps: NonNegInt | None = Field(None, description="Optimizer steps run.")
    loss: float | None = Field(None, description="Final training loss.")
    duration_seconds: float | None = Field(None, ge=0, description="Wall-clock training time, seconds.")
    started_at: Timestamp | None = Field(
        None,
        description="When this student's training first started: maxTrainingTime is measured from here, "
        "whichever pod (retry, resumed or moved run) is training.",
    )
    longest_target_tokens: NonNegInt | None = Field(
        None,
        description="Tokens of the longest target the student was trained to write; evaluation decodes "
        "at most a quarter more.",
    )
    base_model: str | None = Field(
        None, max_length=512, description="What the base model was, as its weights describe it."
    )


class EvaluationAttempt(StatusModel):
    """A trained student's held-out result."""

    student: str = Field(description="Student name.")
    accuracy: Fraction | None = Field(None, description="Held-out accuracy.")
    passed: bool | None = Field(None, description="Whether it met minAccuracy.")


class EvaluationStatus(StatusModel):
    """The held-out evaluation of the trained student."""

    student: str | None = Field(None, description="Student evaluated.")
    accuracy: Fraction | None = Field(None, description="Held-out accuracy.")
    samples: NonNegInt | None = Field(None, description="Held-out samples.")
    correct: NonNegInt | None = Field(None, description="Samples answered correctly.")
    passed: bool | None = Field(None, description="Whether accuracy met minAccuracy.")
    max_new_tokens: NonNegInt | None = Field(
        None, description="Most tokens decoded per answer (from what the student was trained to write)."
    )
    attempts: list[EvaluationAttempt] = Field(
        default_factory=list, description="Every student trained so far."
    )


class EndpointStatus(StatusModel):
    """Where the distilled model is served."""

    url: str | None = Field(None, description="Base URL of the OpenAI-compatible API.")
    model: str | None = Field(None, description="Model name to send in requests.")
    ready: bool | None = Field(None, description="Whether the endpoint passes its readiness check.")
    engine: str | None = Field(None, description="Serving engine: vllm or transformers.")
    latency_ms: float | None = Field(
        None, ge=0, description="Median time to a short chat completion, measured once the endpoint is ready."
    )
    tokens_per_second: float | None = Field(
        None, ge=0, description="Completion tokens per second measured by the same probe."
    )
    external_url: str | None = Field(
        None, description="Base URL of the API from outside the cluster (Ingress or HTTPRoute host)."
    )
    usage: str | None = Field(
        None,
        description="How to call the endpoint: the request, and where the API key is (a Secret "
        "reference, never the key).",
    )


class CostEstimate(StatusModel):
    """The estimate made before a spending stage started, and the budget it was checked against."""

    stage: str = Field(max_length=64, description="teacher evaluation, probes, synthesis, training, ...")
    candidate: str | None = Field(None, max_length=253, description="The student, for per-student stages.")
    usd: float = Field(ge=0, description="Estimated cost of the stage, USD.")
    remaining_usd: float | None = Field(
        None, ge=0, description="What was left of the budget when the stage started (absent: no budget)."
    )
    basis: str = Field(max_length=1024, description="How the estimate was computed.")


class CostCharge(StatusModel):
    """What one stage (or one candidate's run of it) was charged: teacher tokens and node time."""

    stage: str = Field(max_length=64, description="teacher evaluation, probes, synthesis, training, ...")
    candidate: str | None = Field(None, max_length=253, description="Teacher or student of the run.")
    usd: float = Field(ge=0, description="Charged, USD.")
    tokens: NonNegInt | None = Field(None, description="Teacher tokens charged.")
    node_seconds: float | None = Field(
        None, ge=0, description="Elapsed pod time charged at the node's hourly cost (every attempt)."
    )
    attempts: NonNegInt | None = Field(None, description="Pods of the run, failed and retried ones included.")


class RunInFlight(StatusModel):
    """A GPU stage run seen started and not yet charged in full. Its Job may be deleted, evicted or
    cancelled before the stage charges it: the node time from ``startedAt`` to ``endedAt`` (or to when
    the run was seen gone) is then charged once, and the entry goes."""

    stage: str = Field(max_length=64, description="The charge it belongs to: probes, training, evaluation.")
    candidate: str | None = Field(None, max_length=253, description="The student of the run.")
    run: str = Field(max_length=253, description="The run's identity (its Job's uid).")
    started_at: Timestamp = Field(description="When its first pod's container started.")
    ended_at: Timestamp | None = Field(
        None, description="When it was seen finished or cancelled (absent while it runs)."
    )
    hourly_cost: float = Field(ge=0, description="Hourly cost of the node it runs on, USD.")
    charged_seconds: float | None = Field(
        None, ge=0, description="Node time already charged for it (when it was cancelled)."
    )


class CostStatus(StatusModel):
    """What the job has spent or is estimated to spend."""

    estimate_usd: float | None = Field(None, ge=0, description="Estimated total, USD.")
    spent_usd: float | None = Field(None, ge=0, description="Spent so far, USD.")
    teacher_tokens: NonNegInt | None = Field(None, description="Teacher tokens used.")
    gpu_hours: float | None = Field(None, ge=0, description="Node hours used.")
    estimates: list[CostEstimate] = Field(
        default_factory=list,
        description="The estimate made before each spending stage started; a stage whose estimate exceeds "
        "what is left of the budget does not start (BudgetExceeded).",
    )
    charges: list[CostCharge] = Field(
        default_factory=list, description="What each stage was charged; spentUsd is their sum."
    )
    runs: list[RunInFlight] = Field(
        default_factory=list,
        description="GPU stage runs started and not yet charged: charged once if their Job goes before "
        "they finish.",
    )
    serving_charged_until: Timestamp | None = Field(
        None, description="Serving time is charged up to here; the rest is charged as it passes."
    )


class Announcement(StatusModel):
    """An Event decided in a status write and not yet confirmed posted (the outbox of announcements)."""

    seq: NonNegInt = Field(description="Sequence number; the Event's name is derived from it.")
    type: Literal["Normal", "Warning"] = Field(description="Event type.")
    reason: str = Field(max_length=128, description="Event reason, e.g. TeacherSelected.")
    message: str = Field(max_length=4096, description="Event message.")


class DistillationJobStatus(StatusModel):
    """Observed state of the job and every decision the operator took, with reasons."""

    observed_generation: NonNegInt | None = Field(None, description="Last spec generation acted on.")
    phase: Phase | None = Field(None, description="Where the job is, for humans.")
    stage: str | None = Field(None, description="Stage-machine position (internal).")
    message: str | None = Field(None, description="Latest human-readable progress or error.")
    start_time: Timestamp | None = Field(None, description="When the operator started the job.")
    completion_time: Timestamp | None = Field(None, description="When the job reached Serving or Failed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Standard conditions: ServerSelected, TeacherSelected, StudentSelected, DataReady, "
        "Trained, Evaluated, Ready, Failed.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    server: ServerDecision | None = Field(
        None, description="The server selector's decision: node, grid, runners-up, rejections."
    )
    teacher: TeacherDecision | None = Field(
        None, description="The teacher selector's decision and every teacher's accuracy and cost."
    )
    strategy: StrategyDecision | None = Field(
        None, description="The strategy selector's decision: alignment or injection, and the algorithm."
    )
    student: StudentDecision | None = Field(
        None, description="The student selector's decision and every student's a, t, r and M."
    )
    data: DataStatus | None = Field(None, description="The training data that was synthesised.")
    training: TrainingStatus | None = Field(None, description="The training stage's progress and result.")
    evaluation: EvaluationStatus | None = Field(
        None, description="Held-out evaluation of the trained student."
    )
    endpoint: EndpointStatus | None = Field(None, description="Where the distilled model is served.")
    cost: CostStatus | None = Field(None, description="Estimated and actual spend.")
    announcements: list[Announcement] = Field(
        default_factory=list,
        max_length=256,
        description="Events recorded with the decision they announce and not yet posted; the operator "
        "posts them (each under a name derived from its seq, so posting twice is a no-op) and then "
        "drops them, so an announcement survives an operator that stops between the two writes.",
    )
    announced_seq: NonNegInt | None = Field(
        None, description="How many announcements were ever recorded (the next one's seq)."
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if any."""
        return next((c for c in self.conditions if c.type == type_), None)

    def set_condition(
        self,
        type_: str,
        status: Literal["True", "False", "Unknown"],
        reason: str,
        message: str,
        *,
        now: str,
        observed_generation: int | None = None,
    ) -> Condition:
        """Add or update a condition in place (other conditions keep their order), by ``next_condition``."""
        old = self.condition(type_)
        new = next_condition(
            old, type_, status, reason, message, now=now, observed_generation=observed_generation
        )
        if old is None:
            self.conditions = [*self.conditions, new]
        else:
            self.conditions = [new if c.type == type_ else c for c in self.conditions]
        return new

    def is_true(self, type_: str) -> bool:
        """Whether the condition of this type is there and True."""
        cond = self.condition(type_)
        return cond is not None and cond.status == "True"

    def remove_condition(self, type_: str) -> None:
        """Drop the condition of this type (the list is written even when it had none)."""
        self.conditions = [c for c in self.conditions if c.type != type_]
