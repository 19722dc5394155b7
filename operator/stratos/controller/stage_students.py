"""Stage SelectStudent: hardware fit on the chosen node, capacity probes, then Eq. 2 (decision 4).

Students that cannot train or serve on the chosen node are dropped before any probe runs, so nothing
is spent on a model that could never be deployed there. The probes run on the chosen node with one
GPU each; the student answers the probe sample with the chosen teacher's reasoning in its prompt
(the paper's Table 1 method).
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from stratos.api.durations import parse_duration
from stratos.api.spec import StudentSpec
from stratos.api.status import StudentCandidate, StudentDecision
from stratos.catalog.gpus import lookup_gpu
from stratos.controller import conditions as c
from stratos.controller.machine import Context, RunStatus, StageRun, fail, step
from stratos.controller.stage_teachers import teacher_traces
from stratos.controller.stages import Stage
from stratos.decide.estimate import tokens_for
from stratos.decide.models import ModelFacts
from stratos.decide.placement import student_fit
from stratos.decide.students import assess_student, select_student, students_to_probe

STUDENT_PROBE = "student-probe"
PROGRAM = "stratos.workloads.student_probe"
PROBE_MAX_NEW_TOKENS = 128


def probe_run(ctx: Context, student: StudentSpec, teacher: str, node: str) -> StageRun:
    spec = ctx.spec
    config: dict[str, Any] = {
        "student": student.name,
        "modelUri": student.model.uri,
        "task": spec.task.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "sampleSize": spec.task.sample_size,
        "seed": spec.task.seed,
        "tracesPath": teacher_traces(ctx, teacher),
        # With the teacher's reasoning in the prompt the student only has to state the answer.
        "maxNewTokens": PROBE_MAX_NEW_TOKENS,
        "dataRoot": ctx.data_root,
        "outputDir": ctx.job_dir,
    }
    return StageRun(STUDENT_PROBE, PROGRAM, config, candidate=student.name, node=node, gpus=1)


@step(Stage.SELECT_STUDENT)
def select_student_step(ctx: Context) -> Stage | None:
    if ctx.decided("student", "selected", c.STUDENT_SELECTED):
        return Stage.SYNTHESIZE
    spec, server = ctx.spec, ctx.status["server"]
    gpu = lookup_gpu(server["gpu"]["model"])
    if gpu is None:  # the catalog no longer knows a GPU it knew when the server was chosen
        return fail(ctx, "UnknownGPU", f"GPU model {server['gpu']['model']!r} is not in the catalog")
    memory, count = float(server["gpu"]["memoryGib"]), int(server["gpu"]["count"])
    facts = {s.name: ModelFacts.from_spec(s.model) for s in spec.students}
    fits = {s.name: student_fit(spec, facts[s.name], memory) for s in spec.students}
    teacher = ctx.status["teacher"]["selected"]
    runs: dict[str, RunStatus] = {
        s.name: ctx.run(probe_run(ctx, s, teacher, server["node"]))
        for s in spec.students
        if s.name in students_to_probe(fits)
    }
    waiting = {name: run for name, run in runs.items() if run.state in ("Pending", "Running")}
    if waiting:
        detail = "; ".join(f"{name}: {run.message or run.state}" for name, run in sorted(waiting.items()))
        message = f"{len(runs) - len(waiting)} of {len(runs)} student probes finished; waiting on {detail}"
        ctx.condition(c.STUDENT_SELECTED, c.UNKNOWN, "Probing", message)
        return None

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
    ctx.status["student"] = StudentDecision(
        selected=choice.selected, reason=choice.reason, candidates=candidates, ranking=list(choice.ranking)
    ).to_api()
    if choice.selected is None:
        ctx.condition(c.STUDENT_SELECTED, c.FALSE, "NoFeasibleStudent", choice.reason, event="Warning")
        return fail(ctx, "NoFeasibleStudent", choice.reason)
    ctx.condition(c.STUDENT_SELECTED, c.TRUE, "StudentSelected", choice.reason, event="Normal")
    winner = next(v for v in choice.candidates if v.name == choice.selected)
    ctx.estimate_cost(training_usd=winner.training_time_hours * float(server["hourlyCost"]))
    return Stage.SYNTHESIZE


def probe_threshold(ctx: Context) -> float:
    """The probe accuracy a student needs to stay a candidate.

    Under knowledge alignment, A (``minAccuracy``), as in the paper. Under knowledge injection the
    chosen teacher itself misses A, and the student is there to be taught what neither knows: a probe
    (the student answering with the teacher's reasoning in its prompt) cannot be expected to meet A
    before training, so it only ranks the students (its accuracy is ``a`` in M) and A gates the trained
    result (decision 5, with the next-student fallback).
    """
    if (ctx.status.get("strategy") or {}).get("selected") == "injection":
        return 0.0
    return ctx.spec.requirements.min_accuracy


def _ok(run: RunStatus) -> bool:
    return run.state == "Succeeded" and run.result is not None and bool(run.result.get("ok", True))


def _accuracy(run: RunStatus | None) -> float | None:
    if run is None or not _ok(run) or run.result is None:
        return None
    return float(run.result.get("accuracy", 0.0))
