"""The stage machine, shared by the operator and the embedded local runner.

``reconcile`` reads a DistillationJob (its spec and the status the machine wrote before), the facts
the caller gathered (nodes, the state of stage runs), and returns the status to write plus the events
to post. It talks to no API server itself: stage programs are started through an injected ``Executor``
(Kubernetes Jobs in the operator, local processes in ``stratos run``), and every decision is delegated
to a pure function in ``stratos.decide``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from stratos.api.spec import DistillationJobSpec
from stratos.api.status import CostStatus
from stratos.controller import conditions as c
from stratos.controller.stages import PHASE, Stage, parse_stage
from stratos.controller.status_patch import prune_none

EventType = Literal["Normal", "Warning"]
DEFAULT_STORAGE_ROOT = "/var/lib/stratos"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable filled from a Secret by the kubelet; the operator never reads it."""

    env: str
    secret: str
    key: str


@dataclass(frozen=True)
class StageRun:
    """A request to run one stage program (``python -m <program> --config ...``) to completion."""

    stage: str
    program: str
    config: Mapping[str, Any]
    candidate: str | None = None
    node: str | None = None
    gpus: int = 0
    secret_env: tuple[SecretEnv, ...] = ()


@dataclass(frozen=True)
class RunStatus:
    state: Literal["Pending", "Running", "Succeeded", "Failed"]
    result: Mapping[str, Any] | None = None
    message: str = ""


class ChildRejected(Exception):
    """The API server refused (400/422) a child the spec asked for: no retry can fix it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"the API server refused the {kind}: {message}")


@dataclass(frozen=True)
class EndpointRequest:
    """The serving endpoint the Deploy stage asks for."""

    model_name: str
    engine: str
    base_model_uri: str
    adapter_path: str | None
    merged_path: str | None
    node: str
    gpus: int


@dataclass(frozen=True)
class EndpointState:
    state: Literal["Pending", "Ready", "Failed"]
    url: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    latency_ms: float | None = None
    tokens_per_second: float | None = None
    error: str = ""


class Executor(Protocol):
    @property
    def storage_root(self) -> str:
        """Where the job's storage is mounted for stage programs (the pod's mount path, or a local dir)."""
        ...

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        """Start ``run`` unless it already exists, and report its state. Must be idempotent."""
        ...

    def cancel_runs(self) -> None:
        """Stop every running stage run of this job (suspend); finished runs keep their results."""
        ...

    def ensure_endpoint(self, request: EndpointRequest, spec: DistillationJobSpec) -> EndpointState:
        """Create or update the serving endpoint to match ``spec.serving``, and report its state."""
        ...

    def remove_endpoint(self) -> None:
        """Remove the serving endpoint, if there is one."""
        ...

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        """Measure latency and tokens/s with a few short chat completions."""
        ...


@dataclass
class Context:
    """What a stage step sees and changes. ``status`` is a working copy in API (camelCase) form."""

    body: Mapping[str, Any]
    spec: DistillationJobSpec
    status: dict[str, Any]
    generation: int | None
    now: datetime
    nodes: Sequence[Mapping[str, Any]]
    executor: Executor | None
    events: list[Event] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def data_root(self) -> str:
        """Root that relative dataset paths resolve against: the storage mount."""
        return self.executor.storage_root if self.executor else DEFAULT_STORAGE_ROOT

    @property
    def job_dir(self) -> str:
        """This job's own directory on the storage (the uid keeps a re-created namesake apart)."""
        uid = str(self.body["metadata"].get("uid", "local"))[:8]
        return f"{self.data_root}/jobs/{self.name}-{uid}"

    def decided(self, block: str, key: str, condition: str) -> bool:
        """Whether an earlier tick (maybe of an operator since restarted) already made this decision."""
        return bool((self.status.get(block) or {}).get(key)) and c.is_true(
            self.status.get("conditions"), condition
        )

    def add_spend(self, *, tokens: int = 0, gpu_hours: float = 0.0, usd: float = 0.0) -> None:
        """Add teacher tokens, node hours and their price to ``status.cost``."""
        cost = CostStatus.model_validate(self.status.get("cost") or {})
        if tokens:
            cost.teacher_tokens = (cost.teacher_tokens or 0) + tokens
        if gpu_hours:
            cost.gpu_hours = round((cost.gpu_hours or 0.0) + gpu_hours, 6)
        cost.spent_usd = round((cost.spent_usd or 0.0) + usd, 6)
        self.status["cost"] = cost.to_api()

    def estimate_cost(self, *, training_usd: float) -> None:
        """``status.cost.estimateUsd``: spent so far plus the estimated training cost on the chosen node."""
        cost = CostStatus.model_validate(self.status.get("cost") or {})
        cost.estimate_usd = round((cost.spent_usd or 0.0) + training_usd, 6)
        self.status["cost"] = cost.to_api()

    def run(self, run: StageRun) -> RunStatus:
        if self.executor is None:
            return RunStatus("Pending", message="no executor: stage programs cannot be started here")
        return self.executor.ensure(run, self.spec)

    def condition(
        self, ctype: str, status: str, reason: str, message: str, *, event: EventType | None = None
    ) -> None:
        """Set a condition; post an event only when the condition actually changes."""
        before = c.get_condition(self.status.get("conditions"), ctype)
        self.status["conditions"] = c.set_condition(
            self.status.get("conditions"),
            ctype,
            status,
            reason,
            message,
            generation=self.generation,
            now=self.now,
        )
        changed = before is None or (before.get("status"), before.get("reason"), before.get("message")) != (
            status,
            reason,
            message,
        )
        if event and changed:
            self.events.append(Event(event, reason, message))


Step = Callable[[Context], Stage | None]
"""A stage step returns the stage to move to, or None to wait (it is called again on the next tick)."""

STEPS: dict[Stage, Step] = {}


def step(stage: Stage) -> Callable[[Step], Step]:
    def register(fn: Step) -> Step:
        STEPS[stage] = fn
        return fn

    return register


@dataclass(frozen=True)
class Outcome:
    status: dict[str, Any]
    events: list[Event]
    timings: dict[str, float]


def reconcile(
    body: Mapping[str, Any],
    *,
    nodes: Sequence[Mapping[str, Any]],
    executor: Executor | None,
    now: datetime | None = None,
) -> Outcome:
    """Advance the job as far as the facts allow, and return the status it should have."""
    # Importing the steps registers them; done here so that importing the machine stays cheap.
    from stratos.controller import (  # noqa: F401
        stage_deploy,
        stage_distill,
        stage_server,
        stage_students,
        stage_teachers,
    )

    now = now or datetime.now(UTC)
    status: dict[str, Any] = copy.deepcopy(dict(body.get("status") or {}))
    generation = body.get("metadata", {}).get("generation")
    events: list[Event] = []
    try:
        spec = DistillationJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        return _invalid_spec(status, generation, now, err)

    ctx = Context(body, spec, status, generation, now, nodes, executor, events)
    stage = parse_stage(status.get("stage"))
    if (
        stage is Stage.FAILED
        and _failed_reason(status) == "InvalidSpec"
        and _failed_generation(status) != generation
    ):
        # The spec was changed since it was refused: start again from the top; steps skip what is
        # already decided. (A spec refused by a stage, e.g. the white-box KD vocabulary check, is
        # refused again by the same generation: no retry, no event storm.)
        stage = Stage.SELECT_SERVER
        status["conditions"] = c.remove_condition(status.get("conditions"), c.FAILED)
    status["stage"] = stage.value

    if spec.suspend and stage not in (Stage.FAILED, Stage.SUCCEEDED):
        status["phase"] = "Suspended"
        if executor is not None:
            executor.cancel_runs()  # running stage Jobs go; their programs resume from storage later
        ctx.condition(
            c.SUSPENDED,
            c.TRUE,
            "Suspended",
            "spec.suspend is true: running stages stopped, none starts",
            event="Normal",
        )
    else:
        if c.get_condition(status.get("conditions"), c.SUSPENDED) is not None:
            ctx.condition(c.SUSPENDED, c.FALSE, "Resumed", "spec.suspend is false", event="Normal")
        _run(ctx)

    _roll_up_ready(ctx)
    status["observedGeneration"] = generation
    return Outcome(prune_none(status), events, ctx.timings)


# Stages that spend money (teacher tokens, node hours); the budget is checked before each of them.
SPENDING_STAGES = frozenset(
    {Stage.EVALUATE_TEACHERS, Stage.SELECT_STUDENT, Stage.SYNTHESIZE, Stage.TRAIN, Stage.EVALUATE}
)


def _run(ctx: Context) -> None:
    status = ctx.status
    for _ in range(len(Stage) + 1):
        stage = parse_stage(status.get("stage"))
        status["phase"] = PHASE[stage]
        fn = STEPS.get(stage)
        if fn is None:
            if stage not in (Stage.FAILED, Stage.SUCCEEDED):
                status["message"] = f"stage {stage.value} is not available in this version of the operator"
            return
        status.pop("message", None)
        over = over_budget(ctx) if stage in SPENDING_STAGES else None
        if over:
            status["stage"] = fail(ctx, "BudgetExceeded", over).value
            status["phase"] = PHASE[Stage.FAILED]
            return
        try:
            nxt = fn(ctx)
        except ChildRejected as err:
            nxt = fail(ctx, "InvalidSpec", str(err)[:2000])
        if nxt is None or nxt is stage:
            return
        status["stage"] = nxt.value


def over_budget(ctx: Context, *, extra_usd: float = 0.0, what: str = "") -> str | None:
    """Why going on would exceed ``requirements.budget`` (spent so far plus ``extra_usd``), or None."""
    budget = ctx.spec.requirements.budget
    if budget is None:
        return None
    spent = float((ctx.status.get("cost") or {}).get("spentUsd") or 0.0)
    if spent + extra_usd <= budget:
        return None
    plus = f" plus {extra_usd:.2f} USD for {what}" if extra_usd else ""
    return f"spent {spent:.2f} USD{plus} would exceed the budget of {budget:.2f} USD"


def fail(ctx: Context, reason: str, message: str) -> Stage:
    """Move the job to the terminal Failed stage with a reason and a message naming the cause."""
    ctx.condition(c.FAILED, c.TRUE, reason, message, event="Warning")
    ctx.status["message"] = message
    return Stage.FAILED


def _failed_reason(status: Mapping[str, Any]) -> str | None:
    cond = c.get_condition(status.get("conditions"), c.FAILED)
    return str(cond.get("reason")) if cond else None


def _failed_generation(status: Mapping[str, Any]) -> Any:
    cond = c.get_condition(status.get("conditions"), c.FAILED)
    return cond.get("observedGeneration") if cond else None


def _invalid_spec(
    status: dict[str, Any], generation: int | None, now: datetime, err: ValidationError
) -> Outcome:
    message = "invalid spec: " + "; ".join(_describe_error(e) for e in err.errors()[:10])
    before = c.get_condition(status.get("conditions"), c.FAILED)
    status["conditions"] = c.set_condition(
        status.get("conditions"), c.FAILED, c.TRUE, "InvalidSpec", message, generation=generation, now=now
    )
    status["conditions"] = c.set_condition(
        status["conditions"], c.READY, c.FALSE, "InvalidSpec", message, generation=generation, now=now
    )
    status.update(
        stage=Stage.FAILED.value, phase=PHASE[Stage.FAILED], message=message, observedGeneration=generation
    )
    fresh = before is None or before.get("message") != message
    return Outcome(status, [Event("Warning", "InvalidSpec", message)] if fresh else [], {})


def _describe_error(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in ("spec", *error.get("loc", ())))
    return f"{loc}: {error.get('msg', 'invalid value')}"


def _roll_up_ready(ctx: Context) -> None:
    stage = parse_stage(ctx.status.get("stage"))
    if stage in (Stage.SERVING, Stage.SUCCEEDED):
        return  # the Deploy and Serving steps own Ready
    if stage is Stage.FAILED:
        cond = c.get_condition(ctx.status.get("conditions"), c.FAILED) or {}
        ctx.condition(c.READY, c.FALSE, str(cond.get("reason", "Failed")), str(cond.get("message", "")))
        return
    phase = str(ctx.status.get("phase"))
    ctx.condition(c.READY, c.FALSE, phase, f"the pipeline is at stage {stage.value}")
