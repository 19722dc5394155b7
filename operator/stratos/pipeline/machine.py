"""The stage machine, shared by the operator and the embedded local runner.

``reconcile`` reads a DistillationJob (its spec and the status the machine wrote before), the facts
the caller gathered (nodes, the state of stage runs), and returns the status to write plus the events
to post. It talks to no API server itself: stage programs are started through an injected ``Executor``
(Kubernetes Jobs in the operator, local processes in ``stratos run``), and every decision is delegated
to a pure function in ``stratos.decide``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from stratos.api.base import format_errors
from stratos.api.spec import DistillationJobSpec
from stratos.api.status import DistillationJobStatus
from stratos.pipeline import conditions as c
from stratos.pipeline import stage_deploy, stage_distill, stage_server, stage_students, stage_teachers
from stratos.pipeline.context import (
    Context,
    Event,
    Executor,
    PlanOnly,
    SpecProblem,
    Step,
    fail,
    over_budget,
)
from stratos.pipeline.stages import PHASE, Stage, parse_stage
from stratos.pipeline.status_patch import prune_none

#: The step of each stage, in pipeline order; a stage without a step (Failed) rests.
STEPS: Mapping[Stage, Step] = {
    Stage.SELECT_SERVER: stage_server.select_server_step,
    Stage.EVALUATE_TEACHERS: stage_teachers.evaluate_teachers_step,
    Stage.SELECT_STUDENT: stage_students.select_student_step,
    Stage.SYNTHESIZE: stage_distill.synthesize_step,
    Stage.TRAIN: stage_distill.train_step,
    Stage.EVALUATE: stage_distill.evaluate_step,
    Stage.DEPLOY: stage_deploy.deploy_step,
    Stage.SERVING: stage_deploy.serving_step,
    Stage.SUCCEEDED: stage_deploy.succeeded_step,
}


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
    now = now or datetime.now(UTC)
    stored: dict[str, Any] = copy.deepcopy(dict(body.get("status") or {}))
    generation = body.get("metadata", {}).get("generation")
    events: list[Event] = []
    try:
        spec = DistillationJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        return _invalid_spec(stored, generation, now, err)
    except Exception as err:  # a validator that breaks (it should raise ValueError): still a condition
        return errored(stored, generation, now, "validating the spec", err)
    try:
        status, others = read_status(stored)
    except ValidationError as err:
        return errored(stored, generation, now, "reading the status", err)

    ctx = Context(
        body,
        spec,
        status,
        generation,
        now,
        nodes or [],
        PlanOnly() if executor is None else executor,
        events,
        nodes_known=nodes is not None,
    )
    stage = parse_stage(status.stage)
    failed_reason = _failed_reason(status) if stage is Stage.FAILED else None
    # A spec found invalid starts again once it is edited (the same generation stays Failed, quietly: no
    # event, no status write); a job that lacked storage starts again once the storage exists.
    restartable = failed_reason == STORAGE_UNSET or (
        failed_reason == "InvalidSpec" and _failed_generation(status) != generation
    )
    storage_error = ctx.executor.storage_error(spec)
    if storage_error and (restartable or stage not in (Stage.FAILED, Stage.SUCCEEDED)):
        # Stages hand files to each other through the storage: without it nothing can work.
        status.stage = fail(ctx, STORAGE_UNSET, storage_error).value
        status.phase = PHASE[Stage.FAILED]
        _roll_up_ready(ctx)
        ctx.status.observed_generation = generation
        return Outcome(written(ctx.status, others), events, ctx.timings)
    if restartable:
        # Start again from the top; steps skip what is already decided.
        stage = Stage.SELECT_SERVER
        status.remove_condition(c.FAILED)
    status.stage = stage.value

    if spec.suspend and stage not in (Stage.FAILED, Stage.SUCCEEDED):
        status.phase = "Suspended"
        # Running stage Jobs go (charged until now); their programs resume from storage later.
        ctx.cancel_runs()
        ctx.condition(
            c.SUSPENDED,
            c.TRUE,
            "Suspended",
            "spec.suspend is true: running stages stopped, none starts",
            event="Normal",
        )
    else:
        if status.condition(c.SUSPENDED) is not None:
            ctx.condition(c.SUSPENDED, c.FALSE, "Resumed", "spec.suspend is false", event="Normal")
        error = _run(ctx)
        if error is not None:
            ctx.status.observed_generation = (body.get("status") or {}).get("observedGeneration")
            where = f"stage {ctx.status.stage}"
            out = written(ctx.status, others)
            return errored(out, generation, now, where, error, events=events, timings=ctx.timings)
        if stage is not Stage.FAILED and parse_stage(ctx.status.stage) is Stage.FAILED:
            # Failed is final: stage runs still going (the other student probes when one fails, a run
            # when the budget is exceeded) would hold their GPUs for nothing. They go now, charged until
            # now, before the status that says Failed is written (a crash in between fails it again).
            ctx.cancel_runs()

    if ctx.status.condition(c.RECONCILE_ERROR) is not None:
        ctx.status.remove_condition(c.RECONCILE_ERROR)
    _roll_up_ready(ctx)
    ctx.status.observed_generation = generation
    return Outcome(written(ctx.status, others), events, ctx.timings)


def reads_nodes(body: Mapping[str, Any]) -> bool:
    """Whether this reconcile of the job would decide on the node list: the server decision (a new job's
    first), and under the joint rule the student decision, which chooses the node with the student. Later
    stages only check that the chosen node is still there, which waits for the list by itself."""
    stage = parse_stage((body.get("status") or {}).get("stage"))
    if stage is Stage.SELECT_STUDENT:
        spec = body.get("spec")
        servers = spec.get("servers") if isinstance(spec, Mapping) else None
        return not (isinstance(servers, Mapping) and servers.get("rule") == "paper")  # joint, the default
    return stage is Stage.SELECT_SERVER


#: The status keys of the model; any other key (``kopf``'s own, or a field of a newer version) is kept
#: as it was, outside the model.
_STATUS_KEYS = frozenset(info.alias or name for name, info in DistillationJobStatus.model_fields.items())


def read_status(stored: Mapping[str, Any]) -> tuple[DistillationJobStatus, dict[str, Any]]:
    """The stored status as its model (validated once per reconcile), and the keys the model does not own."""
    status = DistillationJobStatus.read({k: v for k, v in stored.items() if k in _STATUS_KEYS})
    return status, {k: v for k, v in stored.items() if k not in _STATUS_KEYS}


def written(status: DistillationJobStatus, others: Mapping[str, Any]) -> dict[str, Any]:
    """The status to store: the keys the model does not own as they were, then the model's own."""
    return {**others, **status.written()}


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
    for _ in range(len(Stage) + 1):
        status = ctx.status
        stage = parse_stage(status.stage)
        status.phase = PHASE[stage]
        fn = STEPS.get(stage)
        if fn is None:
            if stage not in (Stage.FAILED, Stage.SUCCEEDED):
                status.message = f"stage {stage.value} is not available in this version of the operator"
            return None
        status.message = None
        over = over_budget(ctx) if stage in SPENDING_STAGES else None
        if over:
            status.stage = fail(ctx, "BudgetExceeded", over).value
            status.phase = PHASE[Stage.FAILED]
            return None
        if stage is Stage.SELECT_SERVER and not ctx.nodes_known:
            ctx.condition(
                c.SERVER_SELECTED, c.UNKNOWN, "LoadingNodes", "waiting for the operator's list of Nodes"
            )
            return None
        # What was written before the step: a failing step is rolled back to it (dumping is cheaper
        # than a deep copy of the model, and reading it back happens only when a step fails).
        before, announced = status.written(), len(ctx.events)
        try:
            nxt = fn(ctx)
        except SpecProblem as err:
            nxt = fail(ctx, "InvalidSpec", str(err)[:2000])
        except Exception as err:  # every other failure ends as a condition, never as a silent loop
            # Keep what earlier steps decided, drop the half-done work of this one.
            ctx.status = DistillationJobStatus.read(before)
            del ctx.events[announced:]
            return err
        if nxt is None or nxt is stage:
            return None
        ctx.status.stage = nxt.value
    return None


def _failed_reason(status: DistillationJobStatus) -> str | None:
    cond = status.condition(c.FAILED)
    return cond.reason if cond else None


def _failed_generation(status: DistillationJobStatus) -> int | None:
    """The generation the Failed condition was written for (None when it does not say)."""
    cond = status.condition(c.FAILED)
    return cond.observed_generation if cond else None


def _invalid_spec(
    status: dict[str, Any], generation: int | None, now: datetime, err: ValidationError
) -> Outcome:
    message = "invalid spec: " + format_errors(err, "spec", separator="; ", limit=10)
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


def _roll_up_ready(ctx: Context) -> None:
    stage = parse_stage(ctx.status.stage)
    if stage in (Stage.SERVING, Stage.SUCCEEDED):
        return  # the Deploy and Serving steps own Ready
    if stage is Stage.FAILED:
        cond = ctx.status.condition(c.FAILED)
        reason, message = (cond.reason, cond.message) if cond else ("Failed", "")
        ctx.condition(c.READY, c.FALSE, reason, message)
        return
    phase = str(ctx.status.phase)
    if phase == "Suspended":
        ctx.condition(c.READY, c.FALSE, phase, f"suspended at stage {stage.value}")
        return
    # In progress: not known yet whether it will be Ready (API conventions: Unknown, not False).
    ctx.condition(c.READY, c.UNKNOWN, phase, f"the pipeline is at stage {stage.value}")
