"""Teacher selector (paper, "Teacher Selector"; the README's "The decisions"). Pure: no I/O.

Every teacher answers the same probe sample (teacher-eval Jobs). If one or more reach the required
accuracy A, the cheapest of those wins: any of them is good enough, so the token bill decides. If
none does, the most accurate wins: the student can only learn what the teacher knows, so accuracy
is worth more than price. Teachers whose evaluation failed outright (bad key, endpoint down) are
recorded with their error and never chosen.

With ``by="expected"`` (the joint rule) "cheapest" means the lowest expected synthesis cost per kept
answer, price x tokens per answer / yield, from the teacher's own evaluation: a teacher with a low list
price but long answers, or one whose answers fail verification more often (rejection sampling keeps
only verified answers), can cost more per training example than a dearer one. The yield is the
teacher's probe accuracy (at least ``MIN_YIELD``). When a qualifying teacher reported no token counts
the list price decides, as in the paper.

Ties are broken deterministically so that a re-run of the operator records the same decision:
among qualifying teachers price, then higher accuracy, then name; among the rest accuracy, then
lower price, then name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Accuracies are fractions computed as correct/samples; a tolerance keeps 3/20 >= 0.15 true
# whatever the float rounding of either side.
_EPS = 1e-9
#: Floor on the rejection-sampling yield, so a teacher that solved nothing has a finite expected cost.
MIN_YIELD = 0.01


@dataclass(frozen=True)
class TeacherEval:
    """One teacher's evaluation on the probe sample (what a teacher-eval Job reported)."""

    name: str
    accuracy: float = 0.0
    samples: int = 0
    correct: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cost_per_million_tokens: float = 0.0
    error: str | None = None

    @property
    def tokens_per_answer(self) -> float:
        """Prompt plus completion tokens per answered sample in the evaluation (0 when unknown)."""
        return (self.prompt_tokens + self.completion_tokens) / self.samples if self.samples else 0.0

    @property
    def answer_yield(self) -> float:
        """Share of answers that pass verification (the evaluation's accuracy, at least MIN_YIELD)."""
        return max(self.accuracy, MIN_YIELD)

    def expected_usd_per_answer(self) -> float:
        """price x tokens per answer / yield: what one verified training example is expected to cost."""
        return self.cost_per_million_tokens * self.tokens_per_answer / 1e6 / self.answer_yield

    def synthesis_usd(self, samples: int) -> float:
        """Expected teacher spend for ``samples`` verified training examples."""
        return samples * self.expected_usd_per_answer()


@dataclass(frozen=True)
class TeacherVerdict:
    """One candidate as recorded in status (field names match status.teacher.candidates[])."""

    name: str
    accuracy: float
    samples: int
    correct: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    verdict: str
    error: str | None = None


@dataclass(frozen=True)
class TeacherChoice:
    selected: str | None
    reason: str
    candidates: list[TeacherVerdict] = field(default_factory=list)
    accuracy: float | None = None  # the selected teacher's accuracy (None when none selected)


def pct(fraction: float) -> str:
    """0.21 -> '21%', 0.215 -> '21.5%'."""
    text = f"{fraction * 100:.1f}"
    if text.endswith(".0"):
        text = text[:-2]
    return f"{text}%"


def price(cost_per_million_tokens: float) -> str:
    return f"${cost_per_million_tokens:.2f} per 1M tokens"


def meets(accuracy: float, min_accuracy: float) -> bool:
    return accuracy >= min_accuracy - _EPS


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _EPS


def _qualified_key(e: TeacherEval) -> tuple[float, float, str]:
    return (e.cost_per_million_tokens, -e.accuracy, e.name)


def _expected_key(e: TeacherEval) -> tuple[float, float, float, str]:
    return (e.expected_usd_per_answer(), e.cost_per_million_tokens, -e.accuracy, e.name)


def _accuracy_key(e: TeacherEval) -> tuple[float, float, str]:
    return (-e.accuracy, e.cost_per_million_tokens, e.name)


def _loser_verdict(e: TeacherEval, win: TeacherEval, *, min_accuracy: float, any_qualified: bool) -> str:
    a = pct(min_accuracy)
    if any_qualified:
        if not meets(e.accuracy, min_accuracy):
            return f"accuracy {pct(e.accuracy)} below the required {a}"
        if not _same(e.cost_per_million_tokens, win.cost_per_million_tokens):
            return (
                f"more expensive than {win.name} ({_money(e.cost_per_million_tokens)} vs "
                f"{_money(win.cost_per_million_tokens)} per 1M tokens) while both meet {a}"
            )
        if not _same(e.accuracy, win.accuracy):
            return (
                f"same price as {win.name} ({price(e.cost_per_million_tokens)}) but less accurate "
                f"({pct(e.accuracy)} vs {pct(win.accuracy)})"
            )
        return f"tied with {win.name} on price and accuracy; {win.name} wins by name order"
    if not _same(e.accuracy, win.accuracy):
        return f"accuracy {pct(e.accuracy)} below {win.name}'s {pct(win.accuracy)} (no teacher meets {a})"
    if not _same(e.cost_per_million_tokens, win.cost_per_million_tokens):
        return (
            f"as accurate as {win.name} ({pct(e.accuracy)}) but more expensive "
            f"({_money(e.cost_per_million_tokens)} vs {_money(win.cost_per_million_tokens)} per 1M tokens)"
        )
    return f"tied with {win.name} on accuracy and price; {win.name} wins by name order"


def _money(value: float) -> str:
    return f"${value:.2f}"


def _verdict_row(e: TeacherEval, verdict: str) -> TeacherVerdict:
    return TeacherVerdict(
        name=e.name,
        accuracy=e.accuracy,
        samples=e.samples,
        correct=e.correct,
        prompt_tokens=e.prompt_tokens,
        completion_tokens=e.completion_tokens,
        cost_usd=e.cost_usd,
        verdict=verdict,
        error=e.error,
    )


def select_teacher(evals: Iterable[TeacherEval], *, min_accuracy: float, by: str = "price") -> TeacherChoice:
    """Pick the teacher per the paper's rule and say, for every candidate, why it won or lost.

    ``by``: "price" (the paper: list price) or "expected" (expected synthesis cost per verified answer).

    Candidates keep their input order in the result so status lists teachers as the spec does.
    """
    evals = list(evals)
    names = [e.name for e in evals]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique: {names}")
    healthy = [e for e in evals if e.error is None]
    failed = [e for e in evals if e.error is not None]
    a = pct(min_accuracy)

    if not healthy:
        if not evals:
            return TeacherChoice(selected=None, reason="no teachers to evaluate")
        reasons = "; ".join(f"{e.name}: {e.error}" for e in failed)
        return TeacherChoice(
            selected=None,
            reason=f"every teacher failed ({reasons})",
            candidates=[_verdict_row(e, f"failed: {e.error}") for e in evals],
        )

    qualified = [e for e in healthy if meets(e.accuracy, min_accuracy)]
    expected = by == "expected" and bool(qualified) and all(e.tokens_per_answer > 0 for e in qualified)
    if expected and len(qualified) > 1:
        win = min(qualified, key=_expected_key)
        detail = (
            f"expected ${win.expected_usd_per_answer() * 1000:.3f} per 1,000 verified answers: "
            f"{price(win.cost_per_million_tokens)} x {win.tokens_per_answer:.0f} tokens per answer / yield "
            f"{pct(win.answer_yield)}"
        )
        reason = (
            f"{win.name} is the cheapest per verified answer of {len(qualified)} teachers meeting {a} "
            f"({detail})"
        )
        win_verdict = f"selected: lowest expected synthesis cost of {len(qualified)} teachers meeting {a}"
    elif qualified:
        win = min(qualified, key=_qualified_key)
        detail = f"{price(win.cost_per_million_tokens)}, accuracy {pct(win.accuracy)}"
        if len(qualified) == 1:
            reason = f"{win.name} is the only teacher meeting the required accuracy {a} ({detail})"
            win_verdict = f"selected: the only teacher meeting {a}"
        else:
            reason = f"{win.name} is the cheapest of {len(qualified)} teachers meeting {a} ({detail})"
            win_verdict = f"selected: cheapest of {len(qualified)} teachers meeting {a}"
    else:
        win = min(healthy, key=_accuracy_key)
        reason = (
            f"no teacher meets the required accuracy {a}; {win.name} is the most accurate "
            f"({pct(win.accuracy)}, {price(win.cost_per_million_tokens)})"
        )
        win_verdict = f"selected: most accurate ({pct(win.accuracy)}); no teacher meets {a}"
    if failed:
        reason += f"; failed: {', '.join(e.name for e in failed)}"

    rows: list[TeacherVerdict] = []
    for e in evals:
        if e.error is not None:
            rows.append(_verdict_row(e, f"failed: {e.error}"))
        elif e is win:
            rows.append(_verdict_row(e, win_verdict))
        elif expected and meets(e.accuracy, min_accuracy):
            rows.append(
                _verdict_row(
                    e,
                    f"higher expected synthesis cost than {win.name} "
                    f"(${e.expected_usd_per_answer() * 1000:.3f} vs "
                    f"${win.expected_usd_per_answer() * 1000:.3f} per 1,000 verified answers: "
                    f"{e.tokens_per_answer:.0f} tokens per answer, yield {pct(e.answer_yield)}, "
                    f"{price(e.cost_per_million_tokens)}) while both meet {a}",
                )
            )
        else:
            rows.append(
                _verdict_row(
                    e, _loser_verdict(e, win, min_accuracy=min_accuracy, any_qualified=bool(qualified))
                )
            )
    return TeacherChoice(selected=win.name, reason=reason, candidates=rows, accuracy=win.accuracy)
