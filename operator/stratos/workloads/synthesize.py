"""Synthesize stage: the training data, by knowledge alignment or knowledge injection (paper,
"Knowledge Alignment" / "Knowledge Injection", Figure 5).

``python -m stratos.workloads.synthesize --config CONFIG [--result /dev/termination-log]``

- alignment (the teacher solves the task): the teacher writes step-by-step reasoning for each real
  training question; a trace is kept only when its extracted answer verifies against the known one
  (rejection sampling, up to ``attempts`` traces per question);
- injection (the teacher does not): the teacher is given the question *and* its answer
  (`Task.reverse_messages`) and writes the reasoning that connects them; the trace must end in
  that answer and must not say it was handed it.

Either way synthetic questions seeded from the real ones fill up to ``targetSamples``: edited by the
task's mutator with the answer from its solver (Mahjong's ``mutate_hand``: one meld or the pair
replaced), or written by the teacher (Mahjong: the Figure 5 prompt, checked by the solver; other
tasks: a new question in a seed's style, kept only when an independent second call agrees on its
answer). See `stratos.synthesis.engine` for the checks and rejection reasons.

Output ``<outputDir>/data/train.jsonl``, one example per line in trl's conversational format::

    {"id": ..., "messages": [{"role": "system", ...}, {"role": "user", "content": <Task.messages
     prompt>}, {"role": "assistant", "content": <reasoning ending in 'The answer is ...'>}],
     "answer": ..., "source": "real" | "synthetic"}

written and fsynced one line at a time; a restarted Job continues from what is there (see
`stratos.synthesis.store`).

Config (camelCase JSON)::

    {"strategy": "injection", "teacher": {"name": "gpt-4o", "baseURL": "https://.../v1",
     "model": "gpt-4o", "apiKeyEnv": "TEACHER_API_KEY", "costPerMillionTokens": 5, "maxConcurrency": 8,
     "timeout": 120, "maxRetries": 5, "maxTokens": 2048}, "verifierTeacher": null | {same shape},
     "task": {<TaskSpec JSON>}, "targetSamples": 4260, "seed": 0, "dataRoot": "/data",
     "outputDir": "/data/jobs/x", "maxRealSamples": null, "attempts": 3, "temperature": 0.7,
     "verifierTemperature": 0.0, "augment": "auto" | "mutate" | "teacher" | "none",
     "candidateFactor": 4.0}

Result::

    {"ok": true, "strategy": ..., "augment": "mutate" | "rewrite" | "generate" | "none", "target": ...,
     "kept": ..., "real": ..., "synthetic": ..., "rejected": {"answer mismatch": 9, ...},
     "rejectedTotal": ..., "realQuestions": ..., "attempts": <traces over all runs>,
     "requests": <made by this run>, "resumed": <items decided by earlier runs>, "promptTokens": ...,
     "completionTokens": ..., "costUsd": ..., "datasetPath": ...}

Token counts and cost cover every run that wrote the files: every response is counted as it arrives in
``<outputDir>/synthesize/spend.json`` (``stratos.synthesis.spend``), which a retried run's budget cap
starts from. A run that fails or is terminated (SIGTERM) adds the same figures (``costUsd``,
``promptTokens``, ``completionTokens``) to its failure result, so what it paid for is charged too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from stratos.contracts.stage_io import ConfigError, StageError
from stratos.contracts.synthesize import SynthesisSpend, SynthesizeConfig, SynthesizeResult
from stratos.llm.client import TeacherUnavailable
from stratos.synthesis import prompts, sources
from stratos.synthesis.engine import (
    TEACHER_ERROR,
    BudgetReached,
    Caller,
    Decision,
    Engine,
    Mode,
    Progress,
    SpendCap,
)
from stratos.synthesis.spend import SpendLedger
from stratos.synthesis.store import Store
from stratos.tasks import Task, build_task
from stratos.workloads.common import run_stage

log = logging.getLogger("stratos.workloads.synthesize")

#: A run whose first this-many requests were all refused (HTTP 400-like) stops: the endpoint will not
#: take these prompts (too long for its context, a parameter it rejects), and more would only cost.
REFUSAL_BREAKER = 16


def augment_mode(augment: str, task: Task) -> Mode:
    if augment == "none":
        return "none"
    if augment == "mutate":
        if not sources.has_mutator(task):
            raise ConfigError(f"task {task.name} has no mutator; use augment 'teacher' or 'auto'")
        return "mutate"
    if augment == "teacher":
        return "rewrite" if sources.has_rewriter(task) else "generate"
    return "mutate" if sources.has_mutator(task) else "generate"


@asynccontextmanager
async def callers(
    config: SynthesizeConfig, cap: SpendCap | None = None, ledger: SpendLedger | None = None
) -> AsyncIterator[tuple[Caller, Caller]]:
    """(teacher, verifier); without ``verifierTeacher`` the verifier shares the teacher's client, so
    its calls are separate requests under the same concurrency bound on the same endpoint. Both reserve
    their requests' worst case on ``cap`` (the stage's budget) before sending them, and count every
    response in ``ledger`` as it arrives."""
    on_spend = ledger.add if ledger is not None else None
    async with AsyncExitStack() as stack:
        teacher = Caller(
            await stack.enter_async_context(config.teacher.client()),
            max_tokens=config.teacher.max_tokens,
            cap=cap,
            on_spend=on_spend,
        )
        verifier = teacher
        if config.verifier_teacher is not None:
            v = config.verifier_teacher
            client = await stack.enter_async_context(v.client())
            verifier = Caller(client, max_tokens=v.max_tokens, cap=cap, on_spend=on_spend)
        yield teacher, verifier


class SpendReport:
    """What the stage has spent so far, for its failure result: a run that fails, or is terminated,
    still says what it paid for (``run_stage`` adds it to the failure result)."""

    def __init__(self) -> None:
        self.ledger: SpendLedger | None = None

    def __call__(self) -> dict[str, Any]:
        return self.ledger.spent.report() if self.ledger is not None else {}


async def synthesize(config: SynthesizeConfig, report: SpendReport | None = None) -> dict[str, Any]:
    spec = config.task_spec()
    try:
        task = build_task(spec, data_root=config.data_root)
    except ValueError as err:
        raise ConfigError(f"invalid task: {err}") from None
    seed = config.effective_seed(spec)
    mode = augment_mode(config.augment, task)
    train, test = task.load("train"), task.load("test")
    limit = min(config.target_samples, len(train))
    if config.max_real_samples is not None:
        limit = min(limit, config.max_real_samples)
    real = sources.select_real(train, limit=limit, seed=seed)
    seeds = real or list(train)
    header = {
        "strategy": config.strategy,
        # what the data depends on: not sampleSize, which only sizes the teacher and student probes
        "task": spec.model_dump(by_alias=True, exclude_none=True, exclude={"sample_size"}, mode="json"),
        "seed": seed,
        "augment": mode,
        "teacher": config.teacher.model,
    }
    if config.completion == "answer":  # rows without the teacher's reasoning: other data
        header["completion"] = "answer"
    with Store(config.output_dir, header) as store:
        totals = store.totals
        # Every response is counted as it arrives (the state ledger counts an item once decided).
        counted = SynthesisSpend(
            cost_usd=totals.cost_usd,
            prompt_tokens=totals.prompt_tokens,
            completion_tokens=totals.completion_tokens,
        )
        ledger = SpendLedger(config.output_dir, floor=counted)
        if report is not None:
            report.ledger = ledger
        resumed = len(totals.decided)
        todo = [s for s in real if s.id not in totals.decided]
        log.info(
            "synthesize: %s with %s augmentation, %s targets, target %d: %d real questions (%d still to "
            "ask), %d items decided by earlier runs",
            config.strategy,
            mode,
            config.completion,
            config.target_samples,
            len(real),
            len(todo),
            resumed,
        )
        progress = Progress(config.target_samples, step=max(1, config.target_samples // 20))

        def line() -> str:
            kept = len(totals.kept)
            return Progress.line(config.target_samples, kept, totals.real, totals.synthetic, totals.rejected)

        run_requests = run_errors = 0
        budget = config.budget_usd
        if budget is not None:
            log.info(
                "synthesize: budget %.2f USD (worst case %.2f USD), %.2f USD spent by earlier runs",
                budget,
                config.worst_case_usd(),
                ledger.spent.cost_usd,
            )

        def on_decision(decision: Decision) -> None:
            nonlocal run_requests, run_errors
            row = None
            if decision.kept:
                assert decision.sample is not None and decision.reasoning is not None
                row = {
                    "id": decision.id,
                    "messages": prompts.target_messages(task, decision.sample, decision.reasoning),
                    "answer": decision.sample.answer,
                    "source": decision.source,
                }
            store.record(decision.entry(), row)
            run_requests += decision.tally.requests
            run_errors += decision.tally.errors
            progress.tick(line)
            if run_requests >= REFUSAL_BREAKER and run_errors == run_requests:
                name = config.teacher.name
                raise TeacherUnavailable(
                    f"teacher {name}: every one of the first {run_requests} requests was refused"
                )

        # Every request reserves its worst case before it is sent, so requests in flight cannot pass the cap.
        cap = SpendCap(budget, spent=ledger.spent.cost_usd) if budget is not None else None
        async with callers(config, cap, ledger) as (teacher, verifier):
            concurrency = teacher.client.max_concurrency
            if verifier is not teacher:
                concurrency += verifier.client.max_concurrency
            engine = Engine(
                task=task,
                strategy=config.strategy,
                mode=mode,
                teacher=teacher,
                verifier=verifier,
                seeds=seeds,
                known_keys={prompts.question_key(s) for s in (*train, *test)} | totals.keys,
                decided=totals.decided,
                kept=lambda: len(totals.kept),
                target=config.target_samples,
                max_candidates=math.ceil(config.candidate_factor * config.target_samples),
                attempts=config.attempts,
                temperature=config.temperature,
                verifier_temperature=config.verifier_temperature,
                seed=seed,
                window=2 * concurrency,
                reasoning=config.completion == "reasoning",
            )
            stopped = None
            if cap is not None and cap.exhausted:
                stopped = "budget"  # an earlier run used it up: keep what it wrote
            else:
                try:
                    await engine.run(todo, on_decision)
                except BudgetReached:
                    stopped = "budget"
        if stopped:
            log.warning("synthesize: the budget of %.2f USD is used up; keeping what was written", budget)
        log.info("%s", line())
        kept = len(totals.kept)
        if kept == 0:
            if run_requests and run_errors == run_requests:
                raise TeacherUnavailable(f"teacher {config.teacher.name}: every request was refused")
            reasons = ", ".join(f"{r} {n}" for r, n in totals.rejected.most_common()) or "nothing to do"
            if stopped:
                raise StageError(
                    f"the budget of {budget:.2f} USD was used before any example", kind="BudgetExceeded"
                )
            raise StageError(f"no example survived verification ({reasons})", kind="NoTrainingData")
        if kept < config.target_samples:
            log.warning(
                "synthesize: %d examples, short of the target %d (at most %d synthetic candidates)",
                kept,
                config.target_samples,
                engine.max_candidates,
            )
        if totals.rejected.get(TEACHER_ERROR):
            log.warning("synthesize: %d items rejected for teacher errors", totals.rejected[TEACHER_ERROR])
        return SynthesizeResult(
            strategy=config.strategy,
            augment=mode,
            target=config.target_samples,
            kept=kept,
            real=totals.real,
            synthetic=totals.synthetic,
            rejected=dict(totals.rejected.most_common()),
            rejected_total=sum(totals.rejected.values()),
            real_questions=len(real),
            test_samples=len(test),
            attempts=totals.attempts,
            requests=run_requests,
            resumed=resumed,
            prompt_tokens=ledger.spent.prompt_tokens,
            completion_tokens=ledger.spent.completion_tokens,
            cost_usd=ledger.spent.cost_usd,
            stopped_early=stopped,
            dataset_path=str(store.data_path.resolve()),
        ).dump()


def main(argv: list[str] | None = None) -> int:
    report = SpendReport()

    async def body(config: SynthesizeConfig) -> dict[str, Any]:
        return await synthesize(config, report)

    return run_stage("synthesize", SynthesizeConfig, body, argv, on_failure=report)


if __name__ == "__main__":
    raise SystemExit(main())
