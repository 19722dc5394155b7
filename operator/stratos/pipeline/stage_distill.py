"""Stages Synthesize, Train and Evaluate: where the student is made (paper "Knowledge Alignment",
"Knowledge Injection"; README "The decisions" 5).

Synthesis talks to the teacher (CPU, network); training and evaluation run on the chosen node with its
GPUs. When the trained student misses ``minAccuracy`` on held-out data, the next student in the
selector's ranking is trained while one remains (each attempt has its own Jobs and directories);
otherwise the job fails with ``AccuracyBelowThreshold``.
"""

from __future__ import annotations

from typing import Any

from stratos.api.durations import parse_duration
from stratos.api.spec import LoraSpec, StudentSpec, TeacherSpec
from stratos.api.status import (
    CostCharge,
    DataStatus,
    EvaluationAttempt,
    EvaluationStatus,
    TeacherCandidate,
    TrainingStatus,
)
from stratos.catalog.gpus import lookup_gpu
from stratos.contracts.evaluate import EvaluateResult
from stratos.contracts.runs import RunStatus, SecretEnv, StageRun
from stratos.contracts.stage_io import StageResult
from stratos.contracts.synthesize import SynthesisSpend, SynthesizeConfig, SynthesizeResult
from stratos.contracts.teacher import connection
from stratos.contracts.train import TrainConfig, TrainResult
from stratos.decide import budget
from stratos.decide.endpoints import EndpointPolicy, refused_teachers, teacher_endpoints
from stratos.decide.estimate import decode_tokens_per_second
from stratos.decide.evaluation import evaluation_max_new_tokens, needs_merged_weights
from stratos.decide.models import ModelFacts
from stratos.decide.teachers import TeacherEval
from stratos.pipeline import conditions as c
from stratos.pipeline.context import Context, NodeTime, SpecProblem, fail, need, refuse_over_budget
from stratos.pipeline.stage_server import node_lost, reselect_server
from stratos.pipeline.stage_teachers import API_KEY_ENV
from stratos.pipeline.stages import Stage
from stratos.serving.commands import model_location

SYNTHESIZE, TRAIN, EVALUATE = "synthesize", "train", "evaluate"
#: The charge synthesis's teacher spend goes under.
SYNTHESIS = "synthesis"
#: The independent verifier teacher's API key, when it has one (never the same variable as the teacher's:
#: the two may be different accounts).
VERIFIER_API_KEY_ENV = "VERIFIER_API_KEY"


def selected_teacher(ctx: Context) -> TeacherSpec:
    name = ctx.selected_teacher()
    teacher = next((t for t in ctx.spec.teachers if t.name == name), None)
    if teacher is None:
        raise SpecProblem(
            f"spec.teachers no longer has teacher {name!r}, which was selected and whose evaluation the "
            "data depends on: restore it (teachers cannot change once the pipeline has started)"
        )
    return teacher


def synthesize_config(ctx: Context) -> tuple[dict[str, Any], tuple[SecretEnv, ...]]:
    """The synthesize stage's config and the Secret-backed variables it needs (teacher, verifier)."""
    spec = ctx.spec
    chosen = selected_teacher(ctx)
    teacher, secrets = connection(
        chosen.name, chosen.endpoint, chosen.cost_per_million_tokens, chosen.max_concurrency, API_KEY_ENV
    )
    synthesis = spec.distillation.synthesis
    config = SynthesizeConfig(
        strategy=need(ctx.strategy.selected if ctx.strategy else None, "status.strategy.selected"),
        teacher=teacher,
        task=spec.task.model_dump(by_alias=True, exclude_none=True, mode="json"),
        target_samples=spec.distillation.target_samples,
        seed=spec.task.seed,
        augment=synthesis.augment,
        completion=spec.distillation.completion,
        data_root=ctx.data_root,
        output_dir=ctx.job_dir,
    )
    if (v := synthesis.verifier) is not None:
        config.verifier_teacher, verifier_secrets = connection(
            "verifier", v.endpoint, v.cost_per_million_tokens, v.max_concurrency, VERIFIER_API_KEY_ENV
        )
        secrets += verifier_secrets
    return config.dump(), secrets


def _failed(run: RunStatus) -> str | None:
    if run.state == "Failed":
        return run.message or "the stage failed"
    if run.state == "Succeeded" and run.result is not None and not (r := StageResult.read(run.result)).ok:
        return str(r.error or "the stage reported a failure")
    return None


def synthesize_step(ctx: Context) -> Stage | None:
    if ctx.decided("data", "uri", c.DATA_READY):
        return Stage.TRAIN
    spec = ctx.spec
    config, secrets = synthesize_config(ctx)
    # The selected teacher's URL (and the verifier's) may have been edited since the teacher was
    # evaluated: checked again here, before synthesis calls them.
    endpoints = teacher_endpoints(spec.teachers, only=config["teacher"]["name"])
    if (verifier := spec.distillation.synthesis.verifier) is not None:
        endpoints.append(
            ("spec.distillation.synthesis.verifier.endpoint.baseURL", verifier.endpoint.base_url)
        )
    refused = refused_teachers(endpoints, EndpointPolicy.from_env())
    if refused:
        message = "; ".join(refused)
        ctx.condition(c.DATA_READY, c.FALSE, "TeacherEndpointRefused", message, event="Warning")
        return fail(ctx, "TeacherEndpointRefused", message)
    if (over := refuse_over_budget(ctx, synthesis_estimate(ctx), c.DATA_READY)) is not None:
        return over
    left = budget.remaining(spec.requirements.budget, ctx.spent_usd - _synthesis_charged(ctx).usd)
    if left is not None:
        # The cap inside the workload: what the budget leaves besides synthesis itself (every run of the
        # stage counts against it together: the workload's spend ledger starts each run from what the
        # runs before it spent, charged here already or not).
        config["budgetUsd"] = round(left, 6)
    run = ctx.run(StageRun(SYNTHESIZE, "stratos.workloads.synthesize", config, secret_env=secrets))
    # What synthesis says it spent so far (a failed or terminated attempt's failure result too).
    charge_synthesis(ctx, run)
    if (error := _failed(run)) is not None:
        ctx.condition(c.DATA_READY, c.FALSE, "SynthesisFailed", error, event="Warning")
        return fail(ctx, "SynthesisFailed", error)
    if run.state != "Succeeded" or run.result is None:
        ctx.condition(c.DATA_READY, c.UNKNOWN, "Synthesizing", run.message or run.state)
        return None
    r = SynthesizeResult.read(run.result)
    ctx.status.data = DataStatus(
        uri=dataset_path(ctx),
        samples=r.kept,
        real=r.real,
        synthetic=r.synthetic,
        rejected=r.rejected_total,
        test_samples=r.test_samples,
    )
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) or "none"
    message = (
        f"{r.kept} examples ({r.real} real, {r.synthetic} synthetic) by {r.strategy}; rejected: {rejected}"
    )
    if spec.distillation.completion == "answer":
        message += "; targets: the verified answer lines alone (completion: answer)"
    if r.stopped_early == "budget":
        message += f"; stopped at the budget ({r.cost_usd:.2f} USD spent on synthesis)"
    ctx.condition(c.DATA_READY, c.TRUE, "DataSynthesized", message, event="Normal")
    return Stage.TRAIN


def _synthesis_charged(ctx: Context) -> CostCharge:
    return ctx.charged(SYNTHESIS) or CostCharge(stage=SYNTHESIS, usd=0.0)


def charge_synthesis(ctx: Context, run: RunStatus) -> None:
    """Charge what the synthesize stage reports having spent on the teacher: the most any of its
    attempts reported (each reports the spend of every run of the stage so far, from its spend ledger;
    a failed or terminated attempt in its failure result), less what was charged for synthesis already.
    So a repeated reconcile, a restarted operator or a retried pod charges nothing twice."""
    spend = SynthesisSpend()
    for report in (*run.reports, *([run.result] if run.result is not None else [])):
        spend = spend.at_least(SynthesizeResult.read(report).spend())
    charged = _synthesis_charged(ctx)
    usd = round(spend.cost_usd - charged.usd, 6)
    tokens = spend.tokens - (charged.tokens or 0)
    if usd > 0 or tokens > 0:
        ctx.charge(SYNTHESIS, usd=max(usd, 0.0), tokens=max(tokens, 0))


def synthesis_estimate(ctx: Context) -> budget.Estimate:
    """The selected teacher's expected synthesis cost, from its evaluation (tokens per answer, yield)."""
    name = ctx.selected_teacher()
    rows = ctx.teacher.candidates if ctx.teacher else []
    row = next((t for t in rows if t.name == name), None) or TeacherCandidate(name=name)
    price = selected_teacher(ctx).cost_per_million_tokens
    evaluation = TeacherEval(
        name=name,
        accuracy=float(row.accuracy or 0.0),
        samples=int(row.samples or 0),
        prompt_tokens=int(row.prompt_tokens or 0),
        completion_tokens=int(row.completion_tokens or 0),
        cost_per_million_tokens=price,
    )
    distillation = ctx.spec.distillation
    if distillation.completion == "answer" and distillation.synthesis.augment in ("mutate", "none"):
        basis = "answer lines from known and solver-made answers: no teacher request"
        return budget.Estimate("synthesis", 0.0, basis)
    return budget.synthesis(
        distillation.target_samples,
        tokens_per_answer=evaluation.tokens_per_answer,
        answer_yield=evaluation.answer_yield,
        price=price,
    )


def _charge_node_time(ctx: Context, stage: str, student: str, run: RunStatus, seconds: float = 0.0) -> None:
    """Charge a GPU run its node time: every attempt's elapsed pod time (or what the program reported,
    when that is more) at the chosen node's hourly cost."""
    ctx.charge_run(_node_time(ctx, stage), student, run, max(run.seconds, seconds))


def _node_time(ctx: Context, charge: str) -> NodeTime:
    return NodeTime(charge, ctx.chosen_server().hourly_cost)


def current_student(ctx: Context) -> StudentSpec:
    training, decision = ctx.training, ctx.student
    name = (training.student if training else None) or need(
        decision.selected if decision else None, "status.student.selected"
    )
    student = next((s for s in ctx.spec.students if s.name == name), None)
    if student is None:
        raise SpecProblem(
            f"spec.students no longer has student {name!r}, which was selected and is trained: restore it "
            "(students cannot change once the pipeline has started)"
        )
    return student


def merge_weights(ctx: Context, student: StudentSpec) -> bool:
    """Whether training also writes merged weights: the transformers engine serves nothing else, a GGUF
    student is always served merged, and a student whose base model no engine can load (s3://) is served
    from merged weights by vllm too."""
    if needs_merged_weights(ctx.spec.serving.engine, student.model.uri):  # transformers, or a GGUF file
        return True
    try:
        model_location(student.model.uri)
    except ValueError:
        return True
    return False


def _estimated_hours(ctx: Context, student: str) -> float:
    for candidate in ctx.student.candidates if ctx.student else []:
        if candidate.name == student:
            return float(candidate.training_time_hours or 0.0)
    return 0.0


def _attempt(ctx: Context) -> int:
    return int((ctx.training.attempt if ctx.training else None) or 1)


# Artifact locations are derived here, the same way the stage programs derive them from their
# outputDir, rather than read back from results: a path is then the same in every pod that mounts the
# storage, whichever pod wrote it.
def _train_dir(ctx: Context, student: str) -> str:
    return f"{ctx.job_dir}/train/{student}"


def dataset_path(ctx: Context) -> str:
    return f"{ctx.job_dir}/data/train.jsonl"


def train_step(ctx: Context) -> Stage | None:
    student = current_student(ctx)
    training = ctx.training or TrainingStatus()
    if training.student == student.name and training.adapter_uri and ctx.status.is_true(c.TRAINED):
        return Stage.EVALUATE
    spec, server = ctx.spec, ctx.chosen_server()
    started = training.student == student.name and bool(training.algorithm)
    lost = node_lost(ctx)
    if lost and not started:
        return reselect_server(ctx, f"before training {student.name}, {lost}")
    if lost and spec.servers.node_loss_policy == "Fail":
        return fail(ctx, "NodeLost", f"while training {student.name}, {lost}")
    if lost:  # Reselect: stop what runs on the lost node; training resumes from its last checkpoint
        ctx.cancel_runs()
        return reselect_server(ctx, f"while training {student.name}, {lost}")
    hours = _estimated_hours(ctx, student.name)
    estimate = budget.training(student.name, hours=hours, hourly_cost=server.hourly_cost)
    if (over := refuse_over_budget(ctx, estimate, c.TRAINED)) is not None:
        return over
    # maxTrainingTime counts from this student's first training attempt, whichever pod is training.
    started_at = (training.student == student.name and training.started_at) or c.now_rfc3339(ctx.now)
    dist = spec.distillation
    config = TrainConfig(
        algorithm=need(ctx.strategy.algorithm if ctx.strategy else None, "status.strategy.algorithm"),
        student=student.name,
        model_uri=student.model.uri,
        dataset_path=dataset_path(ctx),
        output_dir=_train_dir(ctx, student.name),
        # The spec's own LoraSpec, every setting written out (defaults too): the ConfigMap shows them all.
        lora=LoraSpec.model_validate(dist.lora.model_dump()),
        epochs=dist.epochs,
        learning_rate=dist.learning_rate,
        micro_batch_size=dist.micro_batch_size,
        sequence_length=dist.sequence_length,
        gradient_checkpointing=dist.gradient_checkpointing,
        max_seconds=parse_duration(spec.requirements.max_training_time),
        started_at=started_at,
        merge=merge_weights(ctx, student),
        seed=spec.task.seed,
        task=spec.task.model_dump(by_alias=True, exclude_none=True, mode="json"),
        data_root=ctx.data_root,
    )
    if config.algorithm == "white-box-kd":
        weights = selected_teacher(ctx).weights
        if weights is None:  # the API refuses this; a spec from before the rule existed may not have it
            return fail(ctx, "InvalidSpec", "white-box-kd: the selected teacher has no weights.uri")
        config.teacher_model_uri = weights.uri
    gpus = server.gpu_count
    train_run = StageRun(TRAIN, "stratos.workloads.train", config.dump(), student.name, server.node, gpus)
    run = ctx.run(train_run, _node_time(ctx, "training"))
    if (error := _failed(run)) is not None:
        _charge_node_time(ctx, "training", student.name, run)
        ctx.condition(c.TRAINED, c.FALSE, "TrainingFailed", f"{student.name}: {error}", event="Warning")
        return fail(ctx, "TrainingFailed", f"training {student.name} failed: {error}")
    if run.state != "Succeeded" or run.result is None:
        ctx.status.training = TrainingStatus(
            student=student.name, algorithm=config.algorithm, attempt=_attempt(ctx), started_at=started_at
        )
        ctx.condition(c.TRAINED, c.UNKNOWN, "Training", f"{student.name}: {run.message or run.state}")
        return None
    r = TrainResult.read(run.result)
    ctx.status.training = TrainingStatus(
        student=student.name,
        algorithm=config.algorithm,
        attempt=_attempt(ctx),
        adapter_uri=f"{_train_dir(ctx, student.name)}/adapter",
        steps=r.steps,
        loss=r.last_loss(),
        duration_seconds=r.seconds,
        started_at=started_at,
        merged_uri=f"{_train_dir(ctx, student.name)}/merged" if r.merged_path else None,
        longest_target_tokens=r.longest_target_tokens,
        base_model=r.base_model,
    )
    _charge_node_time(ctx, "training", student.name, run, float(r.seconds or 0.0))
    base = f" ({r.base_model})" if r.base_model else ""
    message = f"{student.name}{base} trained with {config.algorithm}: {r.steps} steps in {r.seconds} s"
    ctx.condition(c.TRAINED, c.TRUE, "Trained", message, event="Normal")
    return Stage.EVALUATE


def evaluation_estimate(ctx: Context, student: StudentSpec, max_new_tokens: int) -> budget.Estimate:
    """Node time of the held-out evaluation: every sample of the test split (the evaluate stage answers
    all of them; the synthesis program counted them), at most ``max_new_tokens`` each, at the student's
    estimated decode rate on the chosen GPU (no rate known: start-up only). A status written before that
    count existed falls back to ``sampleSize``, and the estimate's basis says so."""
    server = ctx.chosen_server()
    gpu = lookup_gpu(server.gpu_model)
    rate = decode_tokens_per_second(ModelFacts.from_spec(student.model), gpu) if gpu is not None else 0.0
    counted = ctx.status.data.test_samples if ctx.status.data is not None else None
    return budget.evaluation(
        student.name,
        samples=int(counted) if counted else ctx.spec.task.sample_size,
        what="test samples" if counted else "samples (sampleSize: the test split was not counted)",
        max_new_tokens=max_new_tokens,
        tokens_per_second=rate,
        hourly_cost=server.hourly_cost,
    )


def evaluate_step(ctx: Context) -> Stage | None:
    if ctx.decided("evaluation", "passed", c.EVALUATED):
        return Stage.DEPLOY
    spec, server, student = ctx.spec, ctx.chosen_server(), current_student(ctx)
    training = need(ctx.training, "status.training")
    config: dict[str, Any] = {
        "student": student.name,
        "modelUri": student.model.uri,
        "adapterPath": need(training.adapter_uri, "status.training.adapterUri"),
        # Decode as far as the student was trained to write, a little more, and no further.
        "maxNewTokens": evaluation_max_new_tokens(
            training.longest_target_tokens, sequence_length=spec.distillation.sequence_length
        ),
        "task": spec.task.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "dataRoot": ctx.data_root,
        "outputDir": _train_dir(ctx, student.name),
    }
    estimate = evaluation_estimate(ctx, student, config["maxNewTokens"])
    if (over := refuse_over_budget(ctx, estimate, c.EVALUATED)) is not None:
        return over
    evaluate_run = StageRun(EVALUATE, "stratos.workloads.evaluate", config, student.name, server.node, 1)
    run = ctx.run(evaluate_run, _node_time(ctx, "evaluation"))
    if (error := _failed(run)) is not None:
        _charge_node_time(ctx, "evaluation", student.name, run)
        ctx.condition(c.EVALUATED, c.FALSE, "EvaluationFailed", f"{student.name}: {error}", event="Warning")
        return fail(ctx, "EvaluationFailed", f"evaluating {student.name} failed: {error}")
    if run.state != "Succeeded" or run.result is None:
        ctx.condition(c.EVALUATED, c.UNKNOWN, "Evaluating", f"{student.name}: {run.message or run.state}")
        return None
    r = EvaluateResult.read(run.result)
    _charge_node_time(ctx, "evaluation", student.name, run)
    accuracy, minimum = r.accuracy, spec.requirements.min_accuracy
    passed = accuracy >= minimum
    previous = ctx.evaluation or EvaluationStatus()
    attempts = [a for a in previous.attempts if a.student != student.name]
    attempts.append(EvaluationAttempt(student=student.name, accuracy=accuracy, passed=passed))
    ctx.status.evaluation = EvaluationStatus(
        student=student.name,
        accuracy=accuracy,
        samples=r.samples,
        correct=r.correct,
        passed=passed,
        max_new_tokens=config["maxNewTokens"],
        attempts=attempts,
    )
    summary = f"{student.name}: held-out accuracy {accuracy:.1%} (minimum {minimum:.1%})"
    if passed:
        ctx.condition(c.EVALUATED, c.TRUE, "AccuracyMet", summary, event="Normal")
        return Stage.DEPLOY
    tried = {a.student for a in attempts}
    ranking = need(ctx.student, "status.student").ranking
    remaining = [name for name in ranking if name not in tried]
    if remaining:
        nxt = remaining[0]
        ctx.status.training = TrainingStatus(student=nxt, attempt=len(tried) + 1)
        ctx.status.remove_condition(c.TRAINED)
        ctx.condition(
            c.EVALUATED, c.FALSE, "TryingNextStudent", f"{summary}; training {nxt} next", event="Warning"
        )
        return Stage.TRAIN
    ctx.condition(c.EVALUATED, c.FALSE, "AccuracyBelowThreshold", summary, event="Warning")
    return fail(ctx, "AccuracyBelowThreshold", f"{summary}; no student candidate left")
