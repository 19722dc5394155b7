"""Stage EvaluateTeachers: one teacher-eval run per teacher, in parallel; then decisions 2 and 3.

Teacher evaluations are CPU work that needs the network, not a GPU, so their pods are not pinned to
the chosen node. A teacher whose endpoint fails outright is recorded with its error and selection goes
on with the others; only when every teacher failed does the job stop.

White-box KD first checks, before any teacher is called, that every teacher's weights and every student
share one vocabulary (``stratos.workloads.vocab_check``, CPU, configs and tokenizers only): a mismatch
ends the job ``InvalidSpec`` with nothing spent. The check's run is named after the model URIs it
compares, so a corrected spec gets a fresh check rather than the old verdict.
"""

from __future__ import annotations

import hashlib
import json
from time import perf_counter

from stratos.api.spec import TeacherSpec
from stratos.api.status import StrategyDecision, TeacherCandidate, TeacherDecision
from stratos.contracts.runs import RunStatus, StageRun
from stratos.contracts.teacher import connection
from stratos.contracts.teacher_eval import TeacherEvalConfig, TeacherEvalResult
from stratos.contracts.vocab_check import NamedModel, VocabCheckConfig, VocabCheckResult
from stratos.decide import budget
from stratos.decide.endpoints import EndpointPolicy, refused_teachers, teacher_endpoints
from stratos.decide.strategy import StrategyError, select_strategy
from stratos.decide.teachers import TeacherEval, select_teacher
from stratos.pipeline import conditions as c
from stratos.pipeline.context import Context, Event, fail, refuse_over_budget
from stratos.pipeline.stages import Stage

TEACHER_EVAL = "teacher-eval"
PROGRAM = "stratos.workloads.teacher_eval"
API_KEY_ENV = "TEACHER_API_KEY"
VOCAB_CHECK = "vocab-check"
VOCAB_CHECK_PROGRAM = "stratos.workloads.vocab_check"
#: Completion tokens a teacher may write per evaluation answer: the program's cap and the estimate's.
TEACHER_EVAL_MAX_TOKENS = 2048


def vocab_check_run(ctx: Context) -> StageRun:
    """The white-box KD vocabulary check of every (teacher weights, student) pair; the candidate part of
    its name is a digest of the URIs compared."""
    spec = ctx.spec
    students = [NamedModel(name=s.name, uri=s.model.uri) for s in spec.students]
    teachers = [NamedModel(name=t.name, uri=t.weights.uri) for t in spec.teachers if t.weights is not None]
    config = VocabCheckConfig(students=students, teachers=teachers, data_root=ctx.data_root).dump()
    named = [config["students"], config["teachers"]]
    digest = hashlib.sha256(json.dumps(named, sort_keys=True).encode()).hexdigest()[:10]
    return StageRun(VOCAB_CHECK, VOCAB_CHECK_PROGRAM, config, candidate=digest)


def _vocabularies_shared(ctx: Context) -> Stage | bool:
    """True once the check passed; False while it runs; Stage.FAILED when it found a mismatch."""
    run = ctx.run(vocab_check_run(ctx))
    if run.state in ("Pending", "Running"):
        detail = run.message or run.state
        message = f"white-box-kd: checking that teachers and students share one vocabulary ({detail})"
        ctx.condition(c.TEACHER_SELECTED, c.UNKNOWN, "CheckingVocabularies", message)
        return False
    result = VocabCheckResult.read(run.result)
    if run.state == "Failed" or not result.ok:
        error = str(result.error or run.message or "the vocabulary check failed")
        ctx.condition(c.TEACHER_SELECTED, c.FALSE, "VocabularyCheckFailed", error, event="Warning")
        return fail(ctx, "InvalidSpec", f"spec.teachers[].weights / spec.students[].model: {error}")
    if not result.shared:
        pairs = "; ".join(result.mismatches) or "vocabularies differ"
        message = (
            f"white-box-kd needs one vocabulary shared by every teacher's weights and every student: {pairs}"
        )
        ctx.condition(c.TEACHER_SELECTED, c.FALSE, "VocabularyMismatch", message, event="Warning")
        return fail(ctx, "InvalidSpec", f"spec.teachers[].weights: {message}")
    return True


def teacher_eval_run(ctx: Context, teacher: TeacherSpec) -> StageRun:
    spec = ctx.spec
    endpoint, secrets = connection(
        teacher.name, teacher.endpoint, teacher.cost_per_million_tokens, teacher.max_concurrency, API_KEY_ENV
    )
    config = TeacherEvalConfig(
        **{**endpoint.model_dump(exclude_unset=True), "max_tokens": TEACHER_EVAL_MAX_TOKENS},
        task=spec.task.model_dump(by_alias=True, exclude_none=True, mode="json"),
        sample_size=spec.task.sample_size,
        seed=spec.task.seed,
        data_root=ctx.data_root,
        output_dir=ctx.job_dir,
    )
    return StageRun(TEACHER_EVAL, PROGRAM, config.dump(), candidate=teacher.name, secret_env=secrets)


def teacher_traces(ctx: Context, teacher: str) -> str:
    """Where teacher-eval wrote the teacher's reasoning traces (read by the student probes)."""
    return f"{ctx.job_dir}/teacher-eval/{teacher}/traces.jsonl"


def teacher_eval(name: str, cost_per_million: float, run: RunStatus) -> TeacherEval:
    """What a finished teacher-eval run measured, as the teacher selector weighs it: the one reading of
    a teacher-eval result. A run that failed, or a result that says ``ok: false``, is a failed
    evaluation carrying the program's error (after its kind, e.g. ``TeacherUnavailable: ...``), else
    the run's own message (a pod's exit, as the kubelet reported it)."""
    r = TeacherEvalResult.read(run.result)
    if run.state == "Failed" or run.result is None or not r.ok:
        said = f"{r.kind}: {r.error}" if r.kind and r.error else r.error
        error = said or run.message or "evaluation failed"
        return TeacherEval(name=name, cost_per_million_tokens=cost_per_million, error=str(error)[:500])
    return TeacherEval(
        name=name,
        accuracy=r.accuracy,
        samples=r.samples,
        correct=r.correct,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        cost_usd=r.cost_usd,
        cost_per_million_tokens=cost_per_million,
    )


def evaluate_teachers_step(ctx: Context) -> Stage | None:
    spec = ctx.spec
    if ctx.teacher is not None and ctx.teacher.selected and ctx.status.is_true(c.TEACHER_SELECTED):
        return Stage.SELECT_STUDENT
    refused = refused_teachers(teacher_endpoints(spec.teachers), EndpointPolicy.from_env())
    if refused:
        message = "; ".join(refused)
        ctx.condition(c.TEACHER_SELECTED, c.FALSE, "TeacherEndpointRefused", message, event="Warning")
        return fail(ctx, "TeacherEndpointRefused", message)
    if spec.distillation.algorithm == "white-box-kd":
        verdict = _vocabularies_shared(ctx)
        if verdict is not True:
            return verdict if isinstance(verdict, Stage) else None
    estimate = budget.teacher_evaluation(
        [(t.name, t.cost_per_million_tokens) for t in spec.teachers],
        sample_size=spec.task.sample_size,
        max_tokens=TEACHER_EVAL_MAX_TOKENS,
    )
    if (over := refuse_over_budget(ctx, estimate, c.TEACHER_SELECTED)) is not None:
        return over
    runs = {t.name: ctx.run(teacher_eval_run(ctx, t)) for t in spec.teachers}
    waiting = {name: run for name, run in runs.items() if run.state in ("Pending", "Running")}
    if waiting:
        done = len(runs) - len(waiting)
        detail = "; ".join(f"{name}: {run.message or run.state}" for name, run in sorted(waiting.items()))
        ctx.condition(
            c.TEACHER_SELECTED,
            c.UNKNOWN,
            "Evaluating",
            f"{done} of {len(runs)} teacher evaluations finished; waiting on {detail}",
        )
        return None

    evals = [teacher_eval(t.name, t.cost_per_million_tokens, runs[t.name]) for t in spec.teachers]
    started = perf_counter()
    by = "expected" if spec.servers.rule == "joint" else "price"
    choice = select_teacher(evals, min_accuracy=spec.requirements.min_accuracy, by=by)
    ctx.timings["teacher"] = perf_counter() - started
    ctx.status.teacher = TeacherDecision(
        selected=choice.selected,
        reason=choice.reason,
        candidates=[
            TeacherCandidate(
                name=v.name,
                accuracy=v.accuracy if v.error is None else None,
                samples=v.samples,
                correct=v.correct,
                prompt_tokens=v.prompt_tokens,
                completion_tokens=v.completion_tokens,
                cost_usd=round(v.cost_usd, 6),
                verdict=v.verdict,
                error=v.error,
            )
            for v in choice.candidates
        ],
    )
    for t in spec.teachers:  # what every evaluation used, a failed one's too when it says
        r = TeacherEvalResult.read(runs[t.name].result)
        tokens = r.prompt_tokens + r.completion_tokens
        ctx.charge("teacher evaluation", candidate=t.name, usd=r.cost_usd, tokens=tokens)
    if choice.selected is None:
        ctx.condition(c.TEACHER_SELECTED, c.FALSE, "NoTeacherAvailable", choice.reason, event="Warning")
        return fail(ctx, "NoTeacherAvailable", choice.reason)
    ctx.condition(c.TEACHER_SELECTED, c.TRUE, "TeacherSelected", choice.reason, event="Normal")

    started = perf_counter()
    try:
        strategy = select_strategy(
            choice.accuracy,
            min_accuracy=spec.requirements.min_accuracy,
            requested_strategy=spec.distillation.strategy,
            requested_algorithm=spec.distillation.algorithm,
        )
    except StrategyError as err:
        return fail(ctx, "InvalidSpec", f"spec.distillation: {err}")
    ctx.timings["strategy"] = perf_counter() - started
    ctx.status.strategy = StrategyDecision(
        selected=strategy.selected, algorithm=strategy.algorithm, reason=strategy.reason
    )
    message = f"{strategy.selected} with {strategy.algorithm}: {strategy.reason}"
    ctx.events.append(Event("Normal", "StrategySelected", message))
    return Stage.SELECT_STUDENT
