"""What a stage step works with: the ``Context`` of one reconcile and the ``Executor`` seam.

A step (one per stage, in ``pipeline/stage_*.py``) reads the spec and the status from its
``Context``, starts stage runs through the context's ``Executor``, records decisions, conditions,
events and spend in the status, and returns the stage to move to. ``SpecProblem`` is the error a step
raises for what only an edit of the spec can fix; ``fail`` ends the job. The machine
(``pipeline/machine.py``) creates the context and calls the steps; this module knows neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from stratos.api.spec import DistillationJobSpec
from stratos.api.status import (
    CostCharge,
    CostEstimate,
    CostStatus,
    DistillationJobStatus,
    EvaluationStatus,
    RunInFlight,
    ServerDecision,
    StatusModel,
    StrategyDecision,
    StudentDecision,
    TeacherDecision,
    TrainingStatus,
)
from stratos.contracts.runs import (
    STORAGE_DIR,
    EndpointRequest,
    EndpointState,
    ProbeOutcome,
    RunStatus,
    StageRun,
)
from stratos.decide import budget
from stratos.pipeline import conditions as c
from stratos.pipeline.stages import Stage

EventType = Literal["Normal", "Warning"]
Block = TypeVar("Block", bound=StatusModel)


class MissingDecision(LookupError):
    """A step needs a decision an earlier stage should have recorded in the status, and it is absent."""


@dataclass(frozen=True)
class ChosenServer:
    """Typed view of the chosen node in ``status.server``: what later stages place and price work by.

    ``node`` and ``hourly_cost`` are required (a server block without them is not a decision); the GPU
    facts are checked when read, so a stage that needs only the node and its price does not depend on them.
    """

    decision: ServerDecision

    @property
    def node(self) -> str:
        return need(self.decision.node, "status.server.node")

    @property
    def hourly_cost(self) -> float:
        return float(need(self.decision.hourly_cost, "status.server.hourlyCost"))

    @property
    def gpu_model(self) -> str:
        return need(self.decision.gpu.model if self.decision.gpu else None, "status.server.gpu.model")

    @property
    def gpu_count(self) -> int:
        return need(self.decision.gpu.count if self.decision.gpu else None, "status.server.gpu.count")

    @property
    def gpu_memory_gib(self) -> float:
        memory = self.decision.gpu.memory_gib if self.decision.gpu else None
        return float(need(memory, "status.server.gpu.memoryGib"))


_T = TypeVar("_T")


def need(value: _T | None, what: str) -> _T:
    """``value``, which an earlier stage should have recorded as ``what``; else ``MissingDecision``."""
    if value is None:
        raise MissingDecision(f"{what} is not set")
    return value


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class NodeTime:
    """How a GPU stage run's node time is charged: under which charge (``probes``, ``training``,
    ``evaluation``) and at the hourly cost of the node it runs on."""

    charge: str
    hourly_cost: float


class SpecProblem(Exception):
    """The spec asks for something that cannot be made; no retry can fix it, an edit of the spec can.

    A step that raises it ends the job ``Failed`` with reason ``InvalidSpec`` and the message; the job
    then stays quiet until its generation changes.
    """


class ChildRejected(SpecProblem):
    """The API server refused (400/422) a child the spec asked for: no retry can fix it."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"the API server refused the {kind}: {message}")


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

    def ensure_endpoint(self, request: EndpointRequest, spec: DistillationJobSpec) -> EndpointState | None:
        """Create or update the serving endpoint to match ``spec.serving``, and report its state; None
        from an executor that serves nothing (``PlanOnly``)."""
        ...

    def remove_endpoint(self) -> None:
        """Remove the serving endpoint, if there is one."""
        ...

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        """Measure latency and tokens/s with a few short chat completions."""
        ...


class PlanOnly:
    """The executor of a reconcile that only plans (``stratos plan``, ``kubectl stratos plan``): it
    starts no stage program and no endpoint, so every run waits and the decisions that need none are
    made. Files would be under the pods' storage path."""

    #: Why a run does not start here.
    WAITING = "no executor: stage programs cannot be started here"

    @property
    def storage_root(self) -> str:
        return STORAGE_DIR

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        return None

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        return RunStatus("Pending", message=self.WAITING)

    def cancel_runs(self) -> None:
        return None

    def ensure_endpoint(self, request: EndpointRequest, spec: DistillationJobSpec) -> EndpointState | None:
        return None

    def remove_endpoint(self) -> None:
        return None

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        return ProbeOutcome(ok=False, error="no executor: nothing is served here")


@dataclass
class Context:
    """What a stage step sees and changes. ``status`` is the working copy of the status model: read once
    when the reconcile starts, written once in its outcome (``DistillationJobStatus.written()``)."""

    body: Mapping[str, Any]
    spec: DistillationJobSpec
    status: DistillationJobStatus
    generation: int | None
    now: datetime
    nodes: Sequence[Mapping[str, Any]]
    executor: Executor
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
        return self.executor.storage_root

    @property
    def job_dir(self) -> str:
        """This job's own directory on the storage (the uid keeps a re-created namesake apart)."""
        uid = str(self.body["metadata"].get("uid", "local"))[:8]
        return f"{self.data_root}/jobs/{self.name}-{uid}"

    @staticmethod
    def _given(block: Block | None) -> Block | None:
        """``block``, or None when absent or empty (``{}``: nothing was written into it)."""
        return block if block is not None and block.model_fields_set else None

    @property
    def server(self) -> ServerDecision | None:
        return self._given(self.status.server)

    def chosen_server(self) -> ChosenServer:
        """The chosen node (status.server); raises ``MissingDecision`` before one was chosen."""
        return ChosenServer(need(self.server, "status.server"))

    @property
    def teacher(self) -> TeacherDecision | None:
        return self._given(self.status.teacher)

    def selected_teacher(self) -> str:
        """The chosen teacher's name; raises ``MissingDecision`` before one was chosen."""
        return need(self.teacher.selected if self.teacher else None, "status.teacher.selected")

    @property
    def strategy(self) -> StrategyDecision | None:
        return self._given(self.status.strategy)

    @property
    def student(self) -> StudentDecision | None:
        return self._given(self.status.student)

    @property
    def training(self) -> TrainingStatus | None:
        return self._given(self.status.training)

    @property
    def evaluation(self) -> EvaluationStatus | None:
        return self._given(self.status.evaluation)

    @property
    def spent_usd(self) -> float:
        """``status.cost.spentUsd``, 0 before anything was charged."""
        return self._cost().spent_usd or 0.0

    def charged(self, stage: str, candidate: str | None = None) -> CostCharge | None:
        """What ``status.cost.charges`` holds for ``stage`` (and ``candidate``), if anything."""
        cost = self.status.cost
        return _keyed(cost.charges, stage, candidate) if cost is not None else None

    def decided(self, block: str, key: str, condition: str) -> bool:
        """Whether an earlier tick (maybe of an operator since restarted) already made this decision:
        ``status.<block>.<key>`` (snake_case attribute names) is set and the condition is True."""
        return bool(getattr(getattr(self.status, block), key, None)) and self.status.is_true(condition)

    def _cost(self) -> CostStatus:
        """A copy of ``status.cost`` to change and hand to ``_set_cost``."""
        cost = self.status.cost
        return cost.model_copy(deep=True) if cost is not None else CostStatus.read({})

    def _set_cost(self, cost: CostStatus) -> None:
        # The cost block is written whole, without its empty lists.
        self.status.cost = CostStatus.read({k: v for k, v in cost.to_api().items() if v != []})

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
        entry = _keyed(cost.charges, stage, candidate)
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
        if _keyed(cost.estimates, estimate.stage, estimate.candidate) is not None:
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

    def run(self, run: StageRun, node_time: NodeTime | None = None) -> RunStatus:
        """Start ``run`` unless it exists, and report its state. With ``node_time`` (a GPU run) the run
        is kept in ``status.cost.runs`` from when it is seen started until the step charges it
        (``charge_run``): a run whose Job went before that (deleted, evicted, garbage-collected; seen as
        another run of the same stage and candidate) is charged then, once."""
        state = self.executor.ensure(run, self.spec)
        if node_time is not None and state.run_id is not None:
            self._track(node_time, run.candidate, state)
        return state

    def _track(self, node_time: NodeTime, candidate: str | None, state: RunStatus) -> None:
        cost = self._cost()
        entry = _keyed(cost.runs, node_time.charge, candidate)
        if entry is not None and entry.run != state.run_id:
            self._charge_gone(entry)  # another run of the same stage: the one seen before is gone
            cost, entry = self._cost(), None
        finished = state.state in ("Succeeded", "Failed")
        if entry is None and state.started_at is not None:
            ended = (state.ended_at or self.now) if finished else None
            cost.runs.append(
                RunInFlight(
                    stage=node_time.charge,
                    candidate=candidate,
                    run=str(state.run_id),
                    started_at=c.now_rfc3339(state.started_at),
                    ended_at=c.now_rfc3339(ended) if ended is not None else None,
                    hourly_cost=node_time.hourly_cost,
                )
            )
        elif entry is not None and entry.ended_at is None and finished:
            # Finished but maybe not charged yet (a probe waits for the others): its end is kept, so a
            # Job that goes before the charge is charged to its end, not to when it was seen gone.
            entry.ended_at = c.now_rfc3339(state.ended_at or self.now)
        else:
            return
        self._set_cost(cost)

    def _charge_gone(self, entry: RunInFlight) -> None:
        """Charge a run whose Job went before the step charged it: its node time from its start to its
        end (or to now, when it was seen gone), less what was charged for it already; drop the entry."""
        end = c.parse_rfc3339(entry.ended_at) if entry.ended_at else self.now
        seconds = budget.run_seconds(
            c.parse_rfc3339(entry.started_at), end, charged=entry.charged_seconds or 0.0
        )
        self._drop_run(entry.stage, entry.candidate)
        usd = budget.node_usd(seconds, entry.hourly_cost)
        self.charge(entry.stage, candidate=entry.candidate, usd=usd, node_seconds=seconds)

    def _drop_run(self, stage: str, candidate: str | None) -> RunInFlight | None:
        cost = self._cost()
        entry = _keyed(cost.runs, stage, candidate)
        if entry is not None:
            cost.runs.remove(entry)
            self._set_cost(cost)
        return entry

    def charge_run(
        self, node_time: NodeTime, candidate: str | None, run: RunStatus, seconds: float | None = None
    ) -> None:
        """Charge a finished GPU run its node time: ``seconds`` (default: the elapsed time of every pod of
        the run) at the node's hourly cost, less what was charged for this run when it was cancelled;
        the run leaves ``status.cost.runs``."""
        entry = self._drop_run(node_time.charge, candidate)
        if entry is not None and run.run_id is not None and entry.run != run.run_id:
            self._charge_gone(entry)  # not this run: the one seen before went uncharged
            entry = None
        already = (entry.charged_seconds or 0.0) if entry is not None else 0.0
        elapsed = run.seconds if seconds is None else seconds
        charged = max(elapsed - already, 0.0)
        usd = budget.node_usd(charged, node_time.hourly_cost)
        attempts = run.attempts or None
        self.charge(node_time.charge, candidate=candidate, usd=usd, node_seconds=charged, attempts=attempts)

    def cancel_runs(self) -> None:
        """Stop every running stage run of this job (suspend, a lost node) and charge the GPU runs among
        them their node time until now; a run that is charged later (it had finished after all) is
        charged only the rest."""
        self.executor.cancel_runs()
        cost = self._cost()
        stopped: list[tuple[RunInFlight, float]] = []
        for entry in cost.runs:
            if entry.ended_at is None:  # still running (a finished one's Job is not deleted)
                seconds = budget.run_seconds(c.parse_rfc3339(entry.started_at), self.now)
                entry.ended_at = c.now_rfc3339(self.now)
                entry.charged_seconds = round(seconds, 3)
                stopped.append((entry, seconds))
        if not stopped:
            return
        self._set_cost(cost)
        for entry, seconds in stopped:
            usd = budget.node_usd(seconds, entry.hourly_cost)
            self.charge(entry.stage, candidate=entry.candidate, usd=usd, node_seconds=seconds)

    def condition(
        self, ctype: str, status: str, reason: str, message: str, *, event: EventType | None = None
    ) -> None:
        """Set a condition; post an event only when the condition actually changes."""
        before = self.status.condition(ctype)
        after = self.status.set_condition(
            ctype,
            c.condition_status(status),
            reason,
            message,
            now=c.now_rfc3339(self.now),
            observed_generation=self.generation,
        )
        # Compared as written (the message cut to its limit), so a long message does not count as a change.
        changed = before is None or (before.status, before.reason, before.message) != (
            after.status,
            after.reason,
            after.message,
        )
        if event and changed:
            self.events.append(Event(event, reason, message))


_Keyed = TypeVar("_Keyed", CostCharge, CostEstimate, RunInFlight)


def _keyed(entries: Iterable[_Keyed], stage: str, candidate: str | None) -> _Keyed | None:
    """The entry for ``stage`` and ``candidate``: ``status.cost`` keeps one charge, one estimate and one
    run in flight per pair."""
    return next((e for e in entries if (e.stage, e.candidate) == (stage, candidate)), None)


Step = Callable[[Context], Stage | None]
"""A stage step returns the stage to move to, or None to wait (it is called again on the next tick)."""


def over_budget(ctx: Context, *, extra_usd: float = 0.0, what: str = "") -> str | None:
    """Why going on would exceed ``requirements.budget`` (spent so far plus ``extra_usd``), or None."""
    limit = ctx.spec.requirements.budget
    if limit is None:
        return None
    spent = ctx.spent_usd
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
    ctx.status.message = message
    return Stage.FAILED
