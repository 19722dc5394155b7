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
from stratos.api.status import CostCharge, CostEstimate, CostStatus
from stratos.controller import conditions as c
from stratos.controller.stages import PHASE, Stage, parse_stage
from stratos.controller.status_patch import prune_none
from stratos.decide import budget

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
    # Elapsed time of every attempt (pod) of the run so far, failed and retried ones included, and how
    # many attempts there were: what node time is charged for.
    seconds: float = 0.0
    attempts: int = 0


class SpecProblem(Exception):
    """The spec asks for something that cannot be made; no retry can fix it, an edit of the spec can.

    A step that raises it ends the job ``Failed`` with reason ``InvalidSpec`` and the message; the job
    then stays quiet until its generation changes.
    """


class ChildRejected(SpecProblem):
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

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        """Why stage programs would have nowhere to keep the job's files (no claim), or None."""
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
    # False while the caller's node list is still loading (an operator that just started): decisions
    # that read nodes wait, nothing concludes from an incomplete list that a node is gone.
    nodes_known: bool = True

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

    def _cost(self) -> CostStatus:
        return CostStatus.model_validate(self.status.get("cost") or {})

    def _set_cost(self, cost: CostStatus) -> None:
        self.status["cost"] = {k: v for k, v in cost.to_api().items() if v != []}

    def add_spend(self, *, tokens: int = 0, gpu_hours: float = 0.0, usd: float = 0.0) -> None:
        """Add teacher tokens, node hours and their price to ``status.cost``."""
        cost = self._cost()
        if tokens:
            cost.teacher_tokens = (cost.teacher_tokens or 0) + tokens
        if gpu_hours:
            cost.gpu_hours = round((cost.gpu_hours or 0.0) + gpu_hours, 6)
        cost.spent_usd = round((cost.spent_usd or 0.0) + usd, 6)
        self._set_cost(cost)

    def charge(
        self,
        stage: str,
        *,
        candidate: str | None = None,
        usd: float,
        tokens: int = 0,
        node_seconds: float | None = None,
        attempts: int | None = None,
    ) -> None:
        """Charge what a stage used: into ``status.cost.charges`` (one entry per stage and candidate,
        added to when charged again) and the totals. Node time also counts as GPU hours."""
        cost = self._cost()
        entry = next((e for e in cost.charges if (e.stage, e.candidate) == (stage, candidate)), None)
        if entry is None:
            entry = CostCharge(stage=stage, candidate=candidate, usd=0.0)
            cost.charges.append(entry)
        entry.usd = round(entry.usd + usd, 6)
        if tokens:
            entry.tokens = (entry.tokens or 0) + tokens
        if node_seconds is not None:
            entry.node_seconds = round((entry.node_seconds or 0.0) + node_seconds, 3)
        if attempts is not None:
            entry.attempts = (entry.attempts or 0) + attempts
        self._set_cost(cost)
        hours = (node_seconds or 0.0) / 3600
        self.add_spend(tokens=tokens, gpu_hours=hours, usd=usd)

    def approve(self, estimate: budget.Estimate) -> str | None:
        """Check a stage's estimate against what is left of the budget before the stage starts.

        Returns why the stage must not start, or None (the estimate is then recorded in
        ``status.cost.estimates``; a stage already approved is not checked again while it runs)."""
        cost = self._cost()
        key = (estimate.stage, estimate.candidate)
        if any((e.stage, e.candidate) == key for e in cost.estimates):
            return None
        limit, spent = self.spec.requirements.budget, cost.spent_usd or 0.0
        refused = budget.refusal(estimate, budget=limit, spent=spent)
        if refused is not None:
            return refused
        left = budget.remaining(limit, spent)
        cost.estimates.append(
            CostEstimate(
                stage=estimate.stage,
                candidate=estimate.candidate,
                usd=round(estimate.usd, 6),
                remaining_usd=round(left, 6) if left is not None else None,
                basis=estimate.basis[:1024],
            )
        )
        self._set_cost(cost)
        return None

    def estimate_cost(self, *, training_usd: float) -> None:
        """``status.cost.estimateUsd``: spent so far plus the estimated training cost on the chosen node."""
        cost = self._cost()
        cost.estimate_usd = round((cost.spent_usd or 0.0) + training_usd, 6)
        self._set_cost(cost)

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
    # An unexpected exception of a step: the status then carries it as the ReconcileError condition,
    # keeps the previous observedGeneration, and the caller retries with backoff.
    error: BaseException | None = None


def reconcile(
    body: Mapping[str, Any],
    *,
    nodes: Sequence[Mapping[str, Any]] | None,
    executor: Executor | None,
    now: datetime | None = None,
) -> Outcome:
    """Advance the job as far as the facts allow, and return the status it should have.

    ``nodes`` is None while the caller has not loaded every Node yet: stages that do not read nodes go
    on, the server decision waits. Nothing a step raises escapes: a ``SpecProblem`` fails the job
    ``InvalidSpec``; anything else becomes the ``ReconcileError`` condition and ``Outcome.error``.
    """
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
    except Exception as err:  # a validator that breaks (it should raise ValueError): still a condition
        return errored(status, generation, now, "validating the spec", err)

    ctx = Context(
        body, spec, status, generation, now, nodes or [], executor, events, nodes_known=nodes is not None
    )
    stage = parse_stage(status.get("stage"))
    failed_reason = _failed_reason(status) if stage is Stage.FAILED else None
    # A spec found invalid starts again once it is edited (the same generation stays Failed, quietly: no
    # event, no status write); a job that lacked storage starts again once the storage exists.
    restartable = failed_reason == STORAGE_UNSET or (
        failed_reason == "InvalidSpec" and _failed_generation(status) != generation
    )
    storage_error = executor.storage_error(spec) if executor is not None else None
    if storage_error and (restartable or stage not in (Stage.FAILED, Stage.SUCCEEDED)):
        # Stages hand files to each other through the storage: without it nothing can work.
        status["stage"] = fail(ctx, STORAGE_UNSET, storage_error).value
        status["phase"] = PHASE[Stage.FAILED]
        _roll_up_ready(ctx)
        status["observedGeneration"] = generation
        return Outcome(prune_none(status), events, ctx.timings)
    if restartable:
        # Start again from the top; steps skip what is already decided.
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
        error = _run(ctx)
        if error is not None:
            status["observedGeneration"] = (body.get("status") or {}).get("observedGeneration")
            where = f"stage {status.get('stage')}"
            return errored(status, generation, now, where, error, events=events, timings=ctx.timings)

    if c.get_condition(status.get("conditions"), c.RECONCILE_ERROR) is not None:
        status["conditions"] = c.remove_condition(status.get("conditions"), c.RECONCILE_ERROR)
    _roll_up_ready(ctx)
    status["observedGeneration"] = generation
    return Outcome(prune_none(status), events, ctx.timings)


#: Failed with the storage missing: neither spec.storage nor the operator's default claim.
STORAGE_UNSET = "StorageUnset"


def errored(
    status: dict[str, Any],
    generation: int | None,
    now: datetime,
    where: str,
    err: BaseException,
    *,
    events: Sequence[Event] = (),
    timings: Mapping[str, float] | None = None,
) -> Outcome:
    """The status before this reconcile plus a ReconcileError condition naming the exception.

    observedGeneration is left where it was: this generation has not been acted on. An event is posted
    only when the condition's message changes, so a retried failure does not flood the object.
    """
    status = copy.deepcopy(status)
    message = f"{where}: {type(err).__name__}: {err}"[:2000]
    before = c.get_condition(status.get("conditions"), c.RECONCILE_ERROR)
    status["conditions"] = c.set_condition(
        status.get("conditions"),
        c.RECONCILE_ERROR,
        c.TRUE,
        type(err).__name__,
        message,
        generation=generation,
        now=now,
    )
    fresh = before is None or before.get("message") != message
    posted = [*events, *([Event("Warning", "ReconcileError", message)] if fresh else [])]
    return Outcome(prune_none(status), posted, dict(timings or {}), error=err)


# Stages that spend money (teacher tokens, node hours); the budget is checked before each of them.
SPENDING_STAGES = frozenset(
    {
        Stage.EVALUATE_TEACHERS,
        Stage.SELECT_STUDENT,
        Stage.SYNTHESIZE,
        Stage.TRAIN,
        Stage.EVALUATE,
        Stage.DEPLOY,
    }
)


def _run(ctx: Context) -> BaseException | None:
    """Run steps until one waits; returns the unexpected exception a step raised, if any."""
    status = ctx.status
    for _ in range(len(Stage) + 1):
        stage = parse_stage(status.get("stage"))
        status["phase"] = PHASE[stage]
        fn = STEPS.get(stage)
        if fn is None:
            if stage not in (Stage.FAILED, Stage.SUCCEEDED):
                status["message"] = f"stage {stage.value} is not available in this version of the operator"
            return None
        status.pop("message", None)
        over = over_budget(ctx) if stage in SPENDING_STAGES else None
        if over:
            status["stage"] = fail(ctx, "BudgetExceeded", over).value
            status["phase"] = PHASE[Stage.FAILED]
            return None
        if stage is Stage.SELECT_SERVER and not ctx.nodes_known:
            ctx.condition(
                c.SERVER_SELECTED, c.UNKNOWN, "LoadingNodes", "waiting for the operator's list of Nodes"
            )
            return None
        before, announced = copy.deepcopy(status), len(ctx.events)
        try:
            nxt = fn(ctx)
        except SpecProblem as err:
            nxt = fail(ctx, "InvalidSpec", str(err)[:2000])
        except Exception as err:  # every other failure ends as a condition, never as a silent loop
            # Keep what earlier steps decided, drop the half-done work of this one.
            status.clear()
            status.update(before)
            del ctx.events[announced:]
            return err
        if nxt is None or nxt is stage:
            return None
        status["stage"] = nxt.value
    return None


def over_budget(ctx: Context, *, extra_usd: float = 0.0, what: str = "") -> str | None:
    """Why going on would exceed ``requirements.budget`` (spent so far plus ``extra_usd``), or None."""
    limit = ctx.spec.requirements.budget
    if limit is None:
        return None
    spent = float((ctx.status.get("cost") or {}).get("spentUsd") or 0.0)
    if spent + extra_usd <= limit:
        return None
    plus = f" plus {extra_usd:.2f} USD for {what}" if extra_usd else ""
    return f"spent {spent:.2f} USD{plus} would exceed the budget of {limit:.2f} USD"


def refuse_over_budget(ctx: Context, estimate: budget.Estimate, condition: str) -> Stage | None:
    """Before a stage starts: Failed/BudgetExceeded (the stage's condition saying why) when its estimate
    exceeds what is left of the budget; None when it may start (the estimate is then recorded)."""
    why = ctx.approve(estimate)
    if why is None:
        return None
    ctx.condition(condition, c.FALSE, "BudgetExceeded", why)
    return fail(ctx, "BudgetExceeded", why)


def fail(ctx: Context, reason: str, message: str) -> Stage:
    """Move the job to the terminal Failed stage with a reason and a message naming the cause."""
    ctx.condition(c.FAILED, c.TRUE, reason, message, event="Warning")
    ctx.status["message"] = message
    return Stage.FAILED


def _failed_reason(status: Mapping[str, Any]) -> str | None:
    cond = c.get_condition(status.get("conditions"), c.FAILED)
    return str(cond.get("reason")) if cond else None


def _failed_generation(status: Mapping[str, Any]) -> int | None:
    """The generation the Failed condition was written for (None when it does not say)."""
    cond = c.get_condition(status.get("conditions"), c.FAILED) or {}
    generation = cond.get("observedGeneration")
    return int(generation) if generation is not None else None


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
    if phase == "Suspended":
        ctx.condition(c.READY, c.FALSE, phase, f"suspended at stage {stage.value}")
        return
    # In progress: not known yet whether it will be Ready (API conventions: Unknown, not False).
    ctx.condition(c.READY, c.UNKNOWN, phase, f"the pipeline is at stage {stage.value}")
