"""Stage SelectStudent: capacity probes, then the student (and, by default, the node) is chosen.

``servers.rule: joint`` (default): every student that fits some shortlisted node (the Pareto-front cells
of SelectServer's grid) is probed once, with one GPU of the cheapest node where it fits; then node and
student are chosen together over every feasible pair (:mod:`stratos.decide.joint`), and both
``status.server`` and ``status.student`` (with the pair, its expected cost and the runners-up) are
written.

``servers.rule: paper``: hardware fit on the node SelectServer chose, probes there, then Eq. 2 (decision
4). Students that cannot train or serve on the chosen node are dropped before any probe runs.

Either way the student answers the probe sample with the chosen teacher's reasoning in its prompt (the
paper's Table 1 method).
"""

from __future__ import annotations

from time import perf_counter

from stratos.api.durations import parse_duration
from stratos.api.spec import StudentSpec
from stratos.api.status import (
    GPUInfo,
    PairCandidate,
    PairCost,
    PairDecision,
    ServerDecision,
    StudentCandidate,
    StudentDecision,
)
from stratos.catalog.gpus import lookup_gpu
from stratos.contracts.runs import RunStatus, StageRun
from stratos.contracts.student_probe import StudentProbeConfig, StudentProbeResult
from stratos.decide import budget
from stratos.decide.estimate import decode_tokens_per_second, tokens_for, training_time_hours
from stratos.decide.joint import JointChoice, JointStudent, PairRow, probe_hours, probe_plan, select_pair
from stratos.decide.models import ModelFacts
from stratos.decide.nodes import NodeFacts
from stratos.decide.placement import (
    joint_costs,
    joint_limits,
    joint_student,
    joint_weights,
    probes_usd,
    student_fit,
)
from stratos.decide.students import assess_student, select_student, students_to_probe
from stratos.decide.teachers import TeacherEval
from stratos.pipeline import conditions as c
from stratos.pipeline.context import Context, NodeTime, fail, refuse_over_budget
from stratos.pipeline.stage_server import decide_server, reselect_server, server_block, shortlist_reason
from stratos.pipeline.stage_teachers import teacher_traces
from stratos.pipeline.stages import Stage

STUDENT_PROBE = "student-probe"
#: The charge the probes' node time goes under.
PROBES = "probes"
PROGRAM = "stratos.workloads.student_probe"
PROBE_MAX_NEW_TOKENS = 128


def probe_run(ctx: Context, student: StudentSpec, teacher: str, node: str) -> StageRun:
    spec = ctx.spec
    config = StudentProbeConfig(
        student=student.name,
        model_uri=student.model.uri,
        task=spec.task.model_dump(by_alias=True, exclude_none=True, mode="json"),
        sample_size=spec.task.sample_size,
        seed=spec.task.seed,
        traces_path=teacher_traces(ctx, teacher),
        # With the teacher's reasoning in the prompt the student only has to state the answer.
        max_new_tokens=PROBE_MAX_NEW_TOKENS,
        data_root=ctx.data_root,
        output_dir=ctx.job_dir,
    )
    return StageRun(STUDENT_PROBE, PROGRAM, config.dump(), candidate=student.name, node=node, gpus=1)


def select_student_step(ctx: Context) -> Stage | None:
    if ctx.decided("student", "selected", c.STUDENT_SELECTED):
        return Stage.SYNTHESIZE
    if ctx.spec.servers.rule == "joint":
        return select_pair_step(ctx)
    spec, server = ctx.spec, ctx.chosen_server()
    gpu = lookup_gpu(server.gpu_model)
    if gpu is None:  # the catalog no longer knows a GPU it knew when the server was chosen
        return fail(ctx, "UnknownGPU", f"GPU model {server.gpu_model!r} is not in the catalog")
    memory, count = server.gpu_memory_gib, server.gpu_count
    facts = {s.name: ModelFacts.from_spec(s.model) for s in spec.students}
    fits = {s.name: student_fit(spec, facts[s.name], memory) for s in spec.students}
    teacher = ctx.selected_teacher()
    probed = [s for s in spec.students if s.name in students_to_probe(fits)]
    node, hourly = server.node, server.hourly_cost
    tokens_each = spec.task.sample_size * PROBE_MAX_NEW_TOKENS
    estimate = budget.probes(
        [
            (
                s.name,
                node,
                hourly,
                budget.decode_seconds(tokens_each, decode_tokens_per_second(facts[s.name], gpu)),
            )
            for s in probed
        ]
    )
    if (over := refuse_over_budget(ctx, estimate, c.STUDENT_SELECTED)) is not None:
        return over
    at = NodeTime(PROBES, hourly)
    runs: dict[str, RunStatus] = {s.name: ctx.run(probe_run(ctx, s, teacher, node), at) for s in probed}
    if probes_waiting(ctx, runs):
        return None

    charge_probes(ctx, runs, {name: hourly for name in runs})
    failed = {name: run.message or "probe failed" for name, run in runs.items() if not _ok(run)}
    dist = spec.distillation
    tokens = tokens_for(dist.target_samples, dist.epochs, dist.sequence_length)
    assessments = [
        assess_student(
            s.name,
            facts[s.name],
            fits[s.name],
            gpu=gpu,
            gpu_count=count,
            tokens=tokens,
            mfu=dist.mfu,
            gradient_checkpointing=dist.gradient_checkpointing,
            accuracy=_accuracy(runs.get(s.name)),
        )
        for s in spec.students
    ]
    started = perf_counter()
    choice = select_student(
        assessments,
        min_accuracy=probe_threshold(ctx),
        max_training_hours=parse_duration(spec.requirements.max_training_time) / 3600,
        min_tokens_per_second=spec.requirements.min_tokens_per_second,
        weights=spec.requirements.weights,
    )
    ctx.timings["student"] = perf_counter() - started
    candidates = []
    for verdict in choice.candidates:
        fields = verdict.status_fields()
        if verdict.name in failed:
            fields["verdict"] = f"probe failed: {failed[verdict.name][:300]}"
        candidates.append(StudentCandidate(**fields))
    ctx.status.student = StudentDecision(
        selected=choice.selected,
        reason=choice.reason,
        candidates=candidates,
        ranking=list(choice.ranking),
        rule="paper",
    )
    if choice.selected is None:
        ctx.condition(c.STUDENT_SELECTED, c.FALSE, "NoFeasibleStudent", choice.reason, event="Warning")
        return fail(ctx, "NoFeasibleStudent", choice.reason)
    ctx.condition(c.STUDENT_SELECTED, c.TRUE, "StudentSelected", choice.reason, event="Normal")
    winner = next(v for v in choice.candidates if v.name == choice.selected)
    ctx.estimate_cost(training_usd=winner.training_time_hours * hourly)
    return Stage.SYNTHESIZE


def probe_threshold(ctx: Context) -> float:
    """The probe accuracy a student needs to stay a candidate.

    Under knowledge alignment, A (``minAccuracy``), as in the paper. Under knowledge injection the
    chosen teacher itself misses A, and the student is there to be taught what neither knows: a probe
    (the student answering with the teacher's reasoning in its prompt) cannot be expected to meet A
    before training, so it only ranks the students (its accuracy is ``a`` in M) and A gates the trained
    result (decision 5, with the next-student fallback).
    """
    if ctx.strategy is not None and ctx.strategy.selected == "injection":
        return 0.0
    return ctx.spec.requirements.min_accuracy


def seconds_each(student: JointStudent, node: NodeFacts, tokens: float) -> float:
    """A probe's estimated node time: start-up plus its decoding at the estimated rate on ``node``."""
    return budget.STARTUP_SECONDS + probe_hours(student, node, tokens) * 3600


def probes_waiting(ctx: Context, runs: dict[str, RunStatus]) -> bool:
    """Whether some probe has not finished; if so, StudentSelected says which and how far they are."""
    waiting = {name: run for name, run in runs.items() if run.state in ("Pending", "Running")}
    if waiting:
        detail = "; ".join(f"{name}: {run.message or run.state}" for name, run in sorted(waiting.items()))
        message = f"{len(runs) - len(waiting)} of {len(runs)} student probes finished; waiting on {detail}"
        ctx.condition(c.STUDENT_SELECTED, c.UNKNOWN, "Probing", message)
    return bool(waiting)


def charge_probes(ctx: Context, runs: dict[str, RunStatus], hourly: dict[str, float]) -> None:
    """Charge every probe its node time: its node's hourly cost x the elapsed time of its pods."""
    for name, run in sorted(runs.items()):
        ctx.charge_run(NodeTime(PROBES, hourly[name]), name, run)


def _ok(run: RunStatus) -> bool:
    return run.state == "Succeeded" and run.result is not None and StudentProbeResult.read(run.result).ok


def _accuracy(run: RunStatus | None) -> float | None:
    if run is None or not _ok(run) or run.result is None:
        return None
    return StudentProbeResult.read(run.result).accuracy


def select_pair_step(ctx: Context) -> Stage | None:
    """The joint rule: probe every student that fits a shortlisted node, then choose node and student."""
    spec = ctx.spec
    if not ctx.nodes_known:
        # The operator's node list is still loading (after a restart): an empty list would read as "no
        # feasible node any more" and throw the server decision away. Wait for the list.
        return None
    server = decide_server(ctx)
    if server.chosen is None:  # the nodes changed since SelectServer: select again
        return reselect_server(ctx, f"no feasible node any more ({server.reason})")
    nodes = list(server.front)
    plain = {s.name: joint_student(spec, s.name) for s in spec.students}
    plan = probe_plan(list(plain.values()), nodes)
    teacher = ctx.selected_teacher()
    where = {name: node for name, node in plan.items() if node is not None}
    tokens_each = spec.task.sample_size * PROBE_MAX_NEW_TOKENS
    estimate = budget.probes(
        [
            (s.name, node.name, node.hourly_cost, seconds_each(plain[s.name], node, tokens_each))
            for s in spec.students
            if (node := where.get(s.name)) is not None
        ]
    )
    if (over := refuse_over_budget(ctx, estimate, c.STUDENT_SELECTED)) is not None:
        return over
    runs: dict[str, RunStatus] = {
        s.name: ctx.run(probe_run(ctx, s, teacher, node.name), NodeTime(PROBES, node.hourly_cost))
        for s in spec.students
        if (node := where.get(s.name)) is not None
    }
    if probes_waiting(ctx, runs):
        return None
    charge_probes(ctx, runs, {name: where[name].hourly_cost for name in runs})
    failed = {name: run.message or "probe failed" for name, run in runs.items() if not _ok(run)}
    students = [joint_student(spec, s.name, _accuracy(runs.get(s.name))) for s in spec.students]
    evals = _teacher_evals(ctx)
    chosen_teacher = next((e for e in evals if e.name == teacher), None)
    synthesis = chosen_teacher.synthesis_usd(spec.distillation.target_samples) if chosen_teacher else 0.0
    costs = joint_costs(
        spec,
        synthesis_usd=synthesis,
        teacher_evaluation_usd=sum(e.cost_usd for e in evals),
        probes=probes_usd(spec, students, plan),
    )
    started = perf_counter()
    choice = select_pair(
        students,
        nodes,
        weights=joint_weights(spec),
        costs=costs,
        limits=joint_limits(spec),
        probe_margin=spec.requirements.probe_margin,
        runners_up=spec.servers.runners_up,
        probe_nodes=plan,
    )
    ctx.timings["student"] = perf_counter() - started
    ctx.status.student = joint_student_block(choice, students, failed, _fallback_estimates(ctx, choice))
    if choice.chosen is None:
        ctx.condition(c.STUDENT_SELECTED, c.FALSE, "NoFeasibleStudent", choice.reason, event="Warning")
        ctx.condition(c.SERVER_SELECTED, c.FALSE, "NoFeasiblePair", choice.reason)
        return fail(ctx, "NoFeasibleStudent", choice.reason)
    pair = choice.chosen
    block = server_block(server, spec.servers.cost_window).to_api()
    block.update(
        node=pair.node.name,
        gpu=GPUInfo(
            model=pair.node.gpu.name, count=pair.node.gpu_count, memory_gib=round(pair.node.gpu_memory_gib, 2)
        ).to_api(),
        hourlyCost=pair.node.hourly_cost,
        latencyMs=pair.node.latency_ms,
        region=pair.node.region,
        cell=list(server.cell_of(pair.node.name)),
        runnersUp=[],
        reason=f"{shortlist_reason(server)}; chosen with the student: {choice.reason}",
    )
    ctx.status.server = ServerDecision.read({k: v for k, v in block.items() if v is not None})
    ctx.condition(
        c.SERVER_SELECTED, c.TRUE, "NodeSelected", f"node {pair.node.name}: {choice.reason}", event="Normal"
    )
    ctx.condition(c.STUDENT_SELECTED, c.TRUE, "StudentSelected", choice.reason, event="Normal")
    ctx.estimate_cost(
        training_usd=pair.cost.training_usd + pair.cost.evaluation_usd + pair.cost.synthesis_usd
    )
    return Stage.SYNTHESIZE


def _teacher_evals(ctx: Context) -> list[TeacherEval]:
    price = {t.name: t.cost_per_million_tokens for t in ctx.spec.teachers}
    out = []
    for row in ctx.teacher.candidates if ctx.teacher else []:
        if row.error:
            continue
        out.append(
            TeacherEval(
                name=row.name,
                accuracy=float(row.accuracy or 0.0),
                samples=int(row.samples or 0),
                correct=int(row.correct or 0),
                prompt_tokens=int(row.prompt_tokens or 0),
                completion_tokens=int(row.completion_tokens or 0),
                cost_usd=float(row.cost_usd or 0.0),
                cost_per_million_tokens=price.get(row.name, 0.0),
            )
        )
    return out


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def _pair_candidate(row: PairRow) -> PairCandidate:
    return PairCandidate(
        node=row.node.name,
        student=row.student,
        utility=_r(row.utility),
        accuracy=_r(row.accuracy),
        latency_ms=_r(row.latency_ms, 3),
        training_time_hours=_r(row.training_hours),
        tokens_per_second=_r(row.tokens_per_second, 1),
        hourly_cost=_r(row.node.hourly_cost),
        expected_cost_usd=_r(row.cost.total, 2),
        reason=row.reason or None,
    )


def _fallback_estimates(ctx: Context, choice: JointChoice) -> dict[str, tuple[float, float]]:
    """(t, r) of every student of the ranking on the chosen node: the training stage's budget check and
    the fallback read a student's training time from ``status.student.candidates``."""
    if choice.chosen is None:
        return {}
    node, dist = choice.chosen.node, ctx.spec.distillation
    tokens = tokens_for(dist.target_samples, dist.epochs, dist.sequence_length)
    out = {}
    for s in ctx.spec.students:
        if s.name in choice.ranking:
            facts = ModelFacts.from_spec(s.model)
            t = training_time_hours(
                facts,
                node.gpu,
                node.gpu_count,
                tokens=tokens,
                mfu=dist.mfu,
                gradient_checkpointing=dist.gradient_checkpointing,
            )
            out[s.name] = (t, decode_tokens_per_second(facts, node.gpu))
    return out


def joint_student_block(
    choice: JointChoice,
    students: list[JointStudent],
    failed: dict[str, str],
    on_node: dict[str, tuple[float, float]] | None = None,
) -> StudentDecision:
    """``status.student`` for the joint rule: every student's verdict, the chosen pair and runners-up.

    ``on_node``: (training hours, tokens/s) on the chosen node of the students in the ranking."""
    pair = choice.chosen
    on_node = on_node or {}
    by_name = {s.name: s for s in students}
    candidates = []
    for v in choice.students:
        verdict = v.verdict
        if v.name in failed:
            verdict = f"probe failed: {failed[v.name][:300]}"
        elif pair is not None and v.name == pair.student:
            verdict = f"selected with node {pair.node.name}; {verdict}"
        candidates.append(
            StudentCandidate(
                name=v.name,
                parameters=v.parameters,
                accuracy=v.accuracy,
                training_time_hours=on_node[v.name][0] if v.name in on_node else None,
                tokens_per_second=_r(on_node[v.name][1], 1) if v.name in on_node else None,
                serving_memory_gib=None,
                training_memory_gib=_r(by_name[v.name].memory_gib, 2),
                score=_r(v.best_utility) if v.best_utility is not None else None,
                verdict=verdict,
                kept=v.kept,
                probe_node=v.probe_node,
                best_node=v.best_node,
            )
        )
    decision = PairDecision(
        pairs=choice.pairs,
        feasible_pairs=choice.feasible_pairs,
        infeasible=dict(sorted(choice.infeasible.items())),
        runners_up=[_pair_candidate(r) for r in choice.runners_up],
        fallback=(
            "if the chosen student misses minAccuracy on held-out data, train next on the same node: "
            + (
                ", ".join(choice.fallback)
                if choice.fallback
                else "nobody (no other kept student has a feasible pair on this node)"
            )
        ),
    )
    if pair is not None:
        decision.node = pair.node.name
        decision.student = pair.student
        decision.utility = _r(pair.utility)
        decision.accuracy = _r(pair.accuracy)
        decision.latency_ms = _r(pair.latency_ms, 3)
        decision.training_time_hours = _r(pair.training_hours)
        decision.tokens_per_second = _r(pair.tokens_per_second, 1)
        cost = pair.cost
        decision.cost = PairCost(
            training_usd=_r(cost.training_usd),
            evaluation_usd=_r(cost.evaluation_usd),
            hosting_usd=_r(cost.hosting_usd),
            synthesis_usd=_r(cost.synthesis_usd),
            teacher_evaluation_usd=_r(cost.teacher_evaluation_usd),
            probes_usd=_r(cost.probes_usd),
            total_usd=_r(cost.total),
        )
        decision.cost_breakdown = cost.text(
            pair.node, pair.training_hours, pair.evaluation_hours, _hosting(pair)
        )
    return StudentDecision(
        selected=pair.student if pair else None,
        reason=choice.reason,
        candidates=candidates,
        ranking=list(choice.ranking),
        rule="joint",
        pair=decision,
    )


def _hosting(pair: PairRow) -> float:
    return pair.cost.hosting_usd / pair.node.hourly_cost if pair.node.hourly_cost > 0 else 0.0
