"""The budget's arithmetic (``spec.requirements.budget``). Pure: no I/O.

Before every stage that spends (teacher evaluation, probes, synthesis, training, evaluation, serving)
the operator makes an estimate of what the stage will cost and refuses to start it when the estimate
is more than what is left of the budget (budget - spent so far). Every estimate says how it was
computed (``Estimate.basis``), and the refusal says the estimate, what is left and how that was
computed.

Charges are what stages really used: teacher tokens as the stage programs count them, and node time
as the node's hourly cost x the elapsed time of every pod of the run (failed and retried attempts
included, from each container's start to its finish, or to now while it runs).

Estimates, by stage:

- teacher evaluation: per teacher, ``sampleSize`` requests of at most ``PROMPT_TOKENS_ESTIMATE`` prompt
  tokens and ``maxTokens`` completion tokens, at the teacher's price (an upper bound per request: the
  teacher has not answered anything yet);
- probes: per probed student, its probe node's hourly cost x (``STARTUP_SECONDS`` + the probe's decoded
  tokens / the estimated decode rate);
- synthesis: ``targetSamples`` x the teacher's tokens per answer in its evaluation / its yield x its
  price (the joint rule's synthesis term); the program is also capped inside at what is left;
- training: the estimated training hours on the chosen node x its hourly cost;
- evaluation: the node's hourly cost x (``STARTUP_SECONDS`` + held-out samples x the decoding cap / the
  estimated decode rate);
- serving: ``serving.expectedHours`` x the node's hourly cost (hours served are charged as they pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

#: Prompt tokens assumed per teacher-evaluation request in its estimate (before any answer is seen).
PROMPT_TOKENS_ESTIMATE = 512
#: Pod start and model load assumed per GPU run (probe, evaluation) in its node-time estimate.
STARTUP_SECONDS = 60.0


@dataclass(frozen=True)
class Estimate:
    """What one stage (or one candidate's run of it) is expected to cost, and how that was computed."""

    stage: str
    usd: float
    basis: str
    candidate: str | None = None

    @property
    def what(self) -> str:
        return f"{self.stage} of {self.candidate}" if self.candidate else self.stage


def remaining(budget: float | None, spent: float) -> float | None:
    """What is left of the budget (never below 0); None without a budget."""
    return None if budget is None else max(budget - spent, 0.0)


def refusal(estimate: Estimate, *, budget: float | None, spent: float) -> str | None:
    """Why the stage must not start (its estimate exceeds what is left of the budget), or None."""
    left = remaining(budget, spent)
    if left is None or estimate.usd <= left + 1e-9:
        return None
    return (
        f"{estimate.what} would cost an estimated {estimate.usd:.4f} USD ({estimate.basis}), more than the "
        f"{left:.4f} USD left of the budget (budget {budget:.4f} USD - spent {spent:.4f} USD)"
    )


def node_usd(seconds: float, hourly_cost: float) -> float:
    """Node time charged: the node's hourly cost x elapsed seconds / 3600."""
    return max(seconds, 0.0) / 3600 * hourly_cost


def run_seconds(started: datetime, ended: datetime, *, charged: float = 0.0) -> float:
    """Node time of a run that went before its stage charged it (its Job deleted, evicted or cancelled):
    from its start to its end (or to when it was seen gone), less the ``charged`` seconds already
    charged for it; never negative."""
    return max((ended - started).total_seconds() - charged, 0.0)


def teacher_evaluation(
    teachers: Sequence[tuple[str, float]],
    *,
    sample_size: int,
    max_tokens: int,
    prompt_tokens: int = PROMPT_TOKENS_ESTIMATE,
) -> Estimate:
    """Every teacher (name, USD per million tokens) answering ``sample_size`` questions, at most."""
    per_request = prompt_tokens + max_tokens
    usd = sum(sample_size * per_request * price / 1e6 for _, price in teachers)
    prices = ", ".join(f"{name} {price:g}" for name, price in teachers)
    basis = (
        f"{len(teachers)} teacher(s) x {sample_size} samples x ({prompt_tokens} prompt + {max_tokens} "
        f"completion tokens, at most) at their prices ({prices} USD per million tokens)"
    )
    return Estimate("teacher evaluation", usd, basis)


def decode_seconds(tokens: float, tokens_per_second: float, *, startup: float = STARTUP_SECONDS) -> float:
    """Seconds a GPU run decoding ``tokens`` takes: start-up plus tokens at the estimated decode rate."""
    return startup + (tokens / tokens_per_second if tokens_per_second > 0 else 0.0)


def probes(rows: Sequence[tuple[str, str, float, float]]) -> Estimate:
    """Probes as (student, node, hourly cost, seconds): each on its probe node."""
    usd = sum(node_usd(seconds, hourly) for _, _, hourly, seconds in rows)
    parts = "; ".join(f"{s} on {n}: {sec:.0f} s x {hourly:g} USD/h" for s, n, hourly, sec in rows)
    return Estimate("probes", usd, f"node time, {STARTUP_SECONDS:g} s start-up + decoding each ({parts})")


def synthesis(samples: int, *, tokens_per_answer: float, answer_yield: float, price: float) -> Estimate:
    """``samples`` verified examples at tokens per answer / yield x the teacher's price."""
    usd = samples * tokens_per_answer / answer_yield * price / 1e6 if answer_yield > 0 else 0.0
    basis = (
        f"{samples} samples x {tokens_per_answer:.0f} tokens per answer / yield {answer_yield:.2f} x "
        f"{price:g} USD per million tokens, from the teacher's evaluation"
    )
    return Estimate("synthesis", usd, basis)


def training(student: str, *, hours: float, hourly_cost: float) -> Estimate:
    basis = f"~{hours:.3g} h of training (estimated) x {hourly_cost:g} USD/h"
    return Estimate("training", hours * hourly_cost, basis, candidate=student)


def evaluation(
    student: str,
    *,
    samples: int,
    max_new_tokens: int,
    tokens_per_second: float,
    hourly_cost: float,
    what: str = "samples",
) -> Estimate:
    seconds = decode_seconds(samples * max_new_tokens, tokens_per_second)
    basis = (
        f"{STARTUP_SECONDS:g} s start-up + {samples} {what} x {max_new_tokens} tokens at "
        f"~{tokens_per_second:.0f} tokens/s = {seconds:.0f} s x {hourly_cost:g} USD/h"
    )
    return Estimate("evaluation", node_usd(seconds, hourly_cost), basis, candidate=student)


def serving(*, expected_hours: float, hourly_cost: float) -> Estimate:
    basis = f"serving.expectedHours {expected_hours:g} h x {hourly_cost:g} USD/h"
    return Estimate("serving", expected_hours * hourly_cost, basis)


def elapsed_seconds(intervals: Iterable[tuple[datetime | None, datetime | None]], now: datetime) -> float:
    """Total elapsed time of (start, end) intervals; an unfinished one counts until ``now``, one that
    never started counts nothing. Every attempt of a run is one interval."""
    total = 0.0
    for start, end in intervals:
        if start is None:
            continue
        total += max(((end or now) - start).total_seconds(), 0.0)
    return total


#: Serving time is charged in steps of at least this many seconds (one status write per step).
SERVING_CHARGE_SECONDS = 300.0


def serving_charge(since: datetime, now: datetime, *, final: bool = False) -> float:
    """Seconds of serving to charge now: the time since ``since`` once it reaches a step (or any, when
    the endpoint goes away: ``final``); 0 otherwise."""
    seconds = max((now - since).total_seconds(), 0.0)
    return seconds if final or seconds >= SERVING_CHARGE_SECONDS else 0.0


def crossed(limit: float | None, before: float, after: float) -> bool:
    """Whether a charge took the spend from within the budget to above it (true for one charge only)."""
    return limit is not None and before <= limit < after


def seconds_left(max_seconds: float, started_at: float, now: float) -> float:
    """What is left of ``max_seconds`` measured from the stage's first attempt (wall-clock epoch
    seconds), whichever pod asks: a retried pod does not start the clock again."""
    return max_seconds - max(now - started_at, 0.0)
