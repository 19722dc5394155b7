"""Rejection sampling and verification per item, and the scheduler that keeps the teacher busy.

An item is a real training question or a synthetic candidate. Each is decided once: kept (with the
reasoning that becomes its training target) or rejected with a reason. What makes a trace acceptable:

- its extracted final answer verifies against the known answer (the real one, or the solver's);
- for reverse reasoning (injection), it also must not say it was handed the answer;
- for a question the teacher wrote itself, an independent verifier must agree on the answer: the
  task's solver where there is one, else a second teacher call (a fresh request, other seed and
  temperature, possibly another endpoint) that solves the question from scratch.

A question gets up to ``attempts`` traces (other seeds; a temperature above zero after the first)
before it is rejected with the last trace's reason.

Budget. With a ``SpendCap`` every request reserves its worst-case cost (prompt bytes plus ``max_tokens``
at the teacher's price) before it is sent and gives back the unused part when it returns, so the requests
in flight can never take the stage past its cap. A request that does not fit waits for those in flight;
one that does not fit with none in flight is not sent: its item stays undecided (a later run asks it
again), no new item starts, and the items still in flight finish and are kept.

Scheduling. Real questions go first; synthetic candidates follow while ``kept + in flight <
target``, taken in index order. A candidate is only started when it could still be needed, so the
candidates tried are exactly the shortest prefix of indices that yields the target (or the cap),
whatever the timing: with a deterministic teacher a run, and a resumed run, decide the same items.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from stratos.llm.client import DEFAULT_MAX_TOKENS, ChatResult, TeacherClient, TeacherRequestRejected, cost_usd
from stratos.synthesis import prompts, sources
from stratos.tasks import Sample, Task
from stratos.tasks.base import Message
from stratos.tasks.extract import strip_final_answer

log = logging.getLogger("stratos.synthesis")

ANSWER_MISMATCH = "answer mismatch"
NO_ANSWER = "no answer extracted"
TRUNCATED = "truncated"
NO_REASONING = "no reasoning"
LEAK = "mentions the given answer"
VERIFIER_DISAGREES = "verifier disagrees"
DUPLICATE = "duplicate"
MALFORMED = "malformed reply"
TEACHER_ERROR = "teacher error"

#: Temperature of retries when the configured one is 0: a greedy teacher would repeat itself.
RETRY_TEMPERATURE = 0.7

Mode = Literal["mutate", "rewrite", "generate", "none"]


#: Tokens a message costs beyond its content (role, separators) in the worst case we reserve for.
MESSAGE_OVERHEAD_TOKENS = 8


class BudgetReached(Exception):
    """The stage's budget cannot cover another request: no new teacher request starts."""


class SpendCap:
    """What teacher requests may spend in all, ``limit`` USD, of which ``spent`` is already used (earlier
    runs, returned requests) and ``reserved`` is held by requests in flight at their worst case."""

    def __init__(self, limit: float, spent: float = 0.0) -> None:
        self.limit, self.spent, self.reserved = limit, spent, 0.0
        self._settled = asyncio.Event()

    async def reserve(self, usd: float) -> None:
        """Hold ``usd`` for a request about to be sent, waiting while requests in flight hold what it
        needs; ``BudgetReached`` when it does not fit even with none in flight."""
        while self.spent + self.reserved + usd > self.limit:
            if self.reserved <= 0:
                raise BudgetReached()
            settled = self._settled
            await settled.wait()
        self.reserved += usd

    def settle(self, reserved: float, used: float) -> None:
        """A request that held ``reserved`` returned having cost ``used`` (0 when it failed)."""
        self.reserved = max(0.0, self.reserved - reserved)
        if self.reserved < 1e-12:
            self.reserved = 0.0
        self.spent += used
        self._settled.set()  # wake the requests waiting for room; they check again
        self._settled = asyncio.Event()

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.limit


@dataclass
class Tally:
    """What one item cost."""

    requests: int = 0
    attempts: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class Decision:
    id: str
    source: Literal["real", "synthetic"]
    reason: str | None = None  # None: kept
    sample: Sample | None = None
    reasoning: str | None = None
    key: str | None = None
    tally: Tally = field(default_factory=Tally)

    @property
    def kept(self) -> bool:
        return self.reason is None

    def entry(self) -> dict[str, Any]:
        """The ledger line (see `stratos.synthesis.store`)."""
        entry: dict[str, Any] = {"id": self.id, "source": self.source, "kept": self.kept}
        if self.reason is not None:
            entry["reason"] = self.reason
        if self.key is not None:
            entry["key"] = self.key
        t = self.tally
        entry.update(
            attempts=t.attempts,
            requests=t.requests,
            promptTokens=t.prompt_tokens,
            completionTokens=t.completion_tokens,
            costUSD=t.cost_usd,
        )
        return entry


class Caller:
    """A teacher client as the engine uses it: one request, accounted to an item's tally."""

    def __init__(
        self,
        client: TeacherClient,
        *,
        max_tokens: int | None,
        cap: SpendCap | None = None,
        on_spend: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.client = client
        self.max_tokens = max_tokens
        self.cap = cap
        # Told (prompt tokens, completion tokens, USD) of every response as it arrives: the spend ledger.
        self.on_spend = on_spend

    def worst_case_usd(self, messages: Sequence[Message]) -> float:
        """The most a request can cost: every prompt byte a token (no tokenizer makes more), plus overhead,
        plus ``max_tokens`` of completion, at the client's price."""
        prompt = sum(len(str(m.get("content", "")).encode()) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        completion = self.max_tokens if self.max_tokens is not None else DEFAULT_MAX_TOKENS
        return cost_usd(prompt + completion, self.client.cost_per_million_tokens)

    async def ask(
        self, messages: Sequence[Message], tally: Tally, *, temperature: float, seed: int
    ) -> ChatResult | None:
        """The reply, or None when the endpoint refused this request (a rejection, not a failure).

        Unavailability and exhausted retries propagate: they end the stage.
        """
        held = self.worst_case_usd(messages) if self.cap is not None else 0.0
        if self.cap is not None:
            await self.cap.reserve(held)  # may wait for requests in flight; BudgetReached if it never fits
        used = 0.0
        tally.requests += 1
        try:
            reply = await self.client.chat(
                messages, max_tokens=self.max_tokens, temperature=temperature, seed=seed
            )
            tokens = reply.prompt_tokens + reply.completion_tokens
            used = cost_usd(tokens, self.client.cost_per_million_tokens)
            if self.on_spend is not None:
                self.on_spend(reply.prompt_tokens, reply.completion_tokens, used)
        except TeacherRequestRejected as err:
            tally.errors += 1
            log.info("teacher %s refused a request: %s", self.client.name, err)
            return None
        finally:
            if self.cap is not None:
                self.cap.settle(held, used)
        tally.prompt_tokens += reply.prompt_tokens
        tally.completion_tokens += reply.completion_tokens
        tally.cost_usd += used
        return reply


def request_seed(seed: int, item: str, role: str, attempt: int) -> int:
    """A sampling seed per (run seed, item, role, attempt): every trace is a fresh, reproducible draw."""
    digest = hashlib.sha256(f"{seed}:{item}:{role}:{attempt}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


class Engine:
    def __init__(
        self,
        *,
        task: Task,
        strategy: Literal["alignment", "injection"],
        mode: Mode,
        teacher: Caller,
        verifier: Caller,
        seeds: Sequence[Sample],
        known_keys: Collection[str],
        decided: Collection[str],
        kept: Callable[[], int],
        target: int,
        max_candidates: int,
        attempts: int,
        temperature: float,
        verifier_temperature: float,
        seed: int,
        window: int,
        reasoning: bool = True,
    ) -> None:
        self.task = task
        self.reverse = strategy == "injection"
        #: False: examples end in the verified answer line alone; no trace is asked of the teacher.
        self.reasoning = reasoning
        self.mode = mode
        self.teacher = teacher
        self.verifier = verifier
        self.seeds = list(seeds)
        self.seen = set(known_keys)
        self.decided = set(decided)
        self.kept = kept
        self.target = target
        self.max_candidates = max_candidates if self.seeds and mode != "none" else 0
        self.attempts = attempts
        self.temperature = temperature
        self.verifier_temperature = verifier_temperature
        self.seed = seed
        self.window = max(1, window)

    # -- checks ------------------------------------------------------------------------------------
    def judge(self, reply: ChatResult, sample: Sample) -> str | None:
        """Why a trace for ``sample`` (whose answer is known) is rejected; None when it is kept."""
        extracted = prompts.extract_answer(self.task, reply)
        if extracted is None:
            return TRUNCATED if reply.finish_reason == "length" else NO_ANSWER
        if not self.task.verify(extracted, sample):
            return ANSWER_MISMATCH
        body = prompts.reply_body(reply)
        if not strip_final_answer(body).strip():
            return NO_REASONING
        if self.reverse and prompts.leaks_answer(body):
            return LEAK
        return None

    def _temperature(self, attempt: int) -> float:
        if attempt and self.temperature == 0:
            return RETRY_TEMPERATURE
        return self.temperature

    async def traces(self, sample: Sample, tally: Tally) -> tuple[str | None, str | None]:
        """Rejection sampling: (reasoning, None) for the first acceptable trace, else (None, reason).
        Without reasoning the answer is the known one: ("", None), and the teacher is not asked."""
        if not self.reasoning:
            return "", None
        reason = NO_ANSWER
        for attempt in range(self.attempts):
            messages = self.task.reverse_messages(sample) if self.reverse else self.task.messages(sample)
            tally.attempts += 1
            reply = await self.teacher.ask(
                messages,
                tally,
                temperature=self._temperature(attempt),
                seed=request_seed(self.seed, sample.id, "trace", attempt),
            )
            if reply is None:
                reason = TEACHER_ERROR
                continue
            judged = self.judge(reply, sample)
            if judged is None:
                return prompts.reply_body(reply), None
            reason = judged
        return None, reason

    # -- items -------------------------------------------------------------------------------------
    async def real(self, sample: Sample) -> Decision:
        tally = Tally()
        reasoning, reason = await self.traces(sample, tally)
        return Decision(sample.id, "real", reason, sample, reasoning, tally=tally)

    async def mutated(self, candidate: Sample, key: str) -> Decision:
        """A candidate made by the task's mutator: the solver re-checks its answer, then traces."""
        tally = Tally()
        decision = Decision(candidate.id, "synthetic", sample=candidate, key=key, tally=tally)
        truth = sources.solver_answer(self.task, candidate)
        if truth is not None and not self.task.verify(truth, candidate):
            decision.reason = VERIFIER_DISAGREES
            return decision
        decision.reasoning, decision.reason = await self.traces(candidate, tally)
        return decision

    async def written(self, index: int) -> Decision:
        """A candidate the teacher writes: Figure 5 (rewrite) or a new question (generate)."""
        tally = Tally()
        item = sources.synthetic_id(index)
        decision = Decision(item, "synthetic", tally=tally)
        seed = sources.seed_of(self.seeds, index)
        if self.mode == "rewrite":
            messages = sources.rewrite_messages(self.task, seed)
        else:
            messages = prompts.generation_messages(self.task, seed)
        tally.attempts += 1
        temperature = max(self.temperature, RETRY_TEMPERATURE)  # diversity is the point here
        reply = await self.teacher.ask(
            messages, tally, temperature=temperature, seed=request_seed(self.seed, item, "write", 0)
        )
        if reply is None:
            decision.reason = TEACHER_ERROR
            return decision
        text = prompts.reply_body(reply)
        if self.mode == "rewrite":
            parsed = sources.parse_rewrite(text, sample_id=item, seed=seed)
            if parsed is None:
                decision.reason = MALFORMED
                return decision
            candidate, body = parsed
        else:
            generated = prompts.parse_generated(text)
            if generated is None:
                decision.reason = MALFORMED
                return decision
            question, body = generated
            answer = self.task.extract(body)
            if answer is None:
                decision.reason = NO_ANSWER
                return decision
            candidate = Sample(item, question, answer, meta={"source": f"generated:{seed.id}"})
        decision.sample, decision.key = candidate, prompts.question_key(candidate)
        if decision.key in self.seen:
            decision.reason = DUPLICATE
            return decision
        self.seen.add(decision.key)
        decision.reason = await self.check_written(candidate, body, tally)
        decision.reasoning = body if self.reasoning else ""
        return decision

    async def check_written(self, candidate: Sample, body: str, tally: Tally) -> str | None:
        if self.mode == "rewrite":  # the answer is the solver's; the teacher's must agree with it
            stated = self.task.extract(body)
            if stated is None:
                return NO_ANSWER
            if not self.task.verify(stated, candidate):
                return VERIFIER_DISAGREES
        if not strip_final_answer(body).strip():
            return NO_REASONING
        if self.mode == "rewrite":
            return None
        reply = await self.verifier.ask(
            self.task.messages(candidate),
            tally,
            temperature=self.verifier_temperature,
            seed=request_seed(self.seed, candidate.id, "verify", 0),
        )
        if reply is None:
            return TEACHER_ERROR
        answer = prompts.extract_answer(self.task, reply)
        return None if answer is not None and self.task.verify(answer, candidate) else VERIFIER_DISAGREES

    # -- scheduling --------------------------------------------------------------------------------
    def _next_synthetic(self, index: int, on_decision: Callable[[Decision], None]) -> Any:
        """The coroutine for candidate ``index``; None when there is nothing to ask for it."""
        item = sources.synthetic_id(index)
        if self.mode == "mutate":
            candidate = sources.mutate_candidate(self.task, self.seeds, seed=self.seed, index=index)
            key = prompts.question_key(candidate)
            if item in self.decided:
                self.seen.add(key)
                return None
            if key in self.seen:
                on_decision(Decision(item, "synthetic", DUPLICATE, candidate, key=key))
                return None
            self.seen.add(key)
            return self.mutated(candidate, key)
        return None if item in self.decided else self.written(index)

    async def run(self, real: Sequence[Sample], on_decision: Callable[[Decision], None]) -> None:
        """Decide every real question in ``real`` and synthetic candidates up to the target.

        Raises ``BudgetReached`` when the spend cap refused a request: by then no new item was started
        after the refusal and every item in flight has finished and been handed to ``on_decision``."""
        pending: set[asyncio.Task[Decision]] = set()
        todo = iter(real)
        real_left = True
        index = 0
        budget_reached = False
        try:
            while True:
                while len(pending) < self.window and not budget_reached:
                    if real_left:
                        sample = next(todo, None)
                        if sample is None:
                            real_left = False
                        else:
                            pending.add(asyncio.create_task(self.real(sample)))
                        continue
                    if index >= self.max_candidates or self.kept() + len(pending) >= self.target:
                        break
                    work = self._next_synthetic(index, on_decision)
                    index += 1
                    if work is not None:
                        pending.add(asyncio.create_task(work))
                if not pending:
                    if budget_reached:
                        raise BudgetReached()
                    return
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                failed: BaseException | None = None
                for finished in done:
                    error = finished.exception()
                    if error is None:
                        on_decision(finished.result())
                    elif isinstance(error, BudgetReached):
                        budget_reached = True  # the requests in flight finish; nothing new starts
                    else:
                        failed = failed or error
                if failed is not None:
                    raise failed
        finally:
            for leftover in pending:
                leftover.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


class Progress:
    """Progress lines a human can follow in ``kubectl logs``: every ``step`` decisions or 30 s."""

    def __init__(self, target: int, *, step: int, interval: float = 30.0) -> None:
        self.target = target
        self.step = max(1, step)
        self.interval = interval
        self._count = 0
        self._last = time.monotonic()

    @staticmethod
    def line(target: int, kept: int, real: int, synthetic: int, rejected: Counter[str]) -> str:
        total = sum(rejected.values())
        reasons = ", ".join(f"{r} {n}" for r, n in rejected.most_common())
        return f"synthesize: {kept}/{target} kept ({real} real, {synthetic} synthetic), {total} rejected" + (
            f" ({reasons})" if reasons else ""
        )

    def tick(self, make_line: Callable[[], str], *, force: bool = False) -> None:
        self._count += 1
        now = time.monotonic()
        if force or self._count % self.step == 0 or now - self._last >= self.interval:
            self._last = now
            log.info("%s", make_line())
