"""Student selector (paper, "Student Selector" and Eq. 2; the README's "The decisions"). Pure.

Order of the filters, cheapest first, so that no probe is spent on a student that cannot run:

1. Hardware upper bound. :func:`hardware_fit` compares the LoRA-training and serving memory of each
   student (:mod:`stratos.decide.estimate`) with the chosen node's per-GPU memory; only students that
   fit are probed (:func:`students_to_probe`).
2. Accuracy threshold A. The probe gives each fitting student the teacher's reasoning in its prompt
   (paper, Table 1); a student whose accuracy a < A is dropped, as is one with no probe result.
3. Requirements: expected training time t <= T and decode throughput r >= R.
4. Score. a, t and r are min-max normalised over the survivors and
   M = alpha*a~ + beta*(1 - t~) + theta*r~; the highest M wins.

Normalisation of a constant column (one survivor, or equal values): it gives everyone the same
value, so any constant would rank identically; we use the best end of the scale (a~ = r~ = 1,
t~ = 0), so a lone survivor scores exactly 1. The weights are divided by their sum, which keeps M in
[0, 1] and does not change the ranking.

Ties are broken deterministically, so a re-run records the same decision: higher M (compared to
1e-9), then higher accuracy, then fewer parameters (cheaper to train and serve), then name.

Every candidate gets a verdict in words, like the "Decision Reason" column of the paper's Table 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from stratos.decide.estimate import (
    GPULike,
    decode_tokens_per_second,
    serving_memory_gib,
    training_memory_gib,
    training_time_hours,
)
from stratos.decide.models import ModelFacts

# Probe accuracies are correct/samples fractions; a tolerance keeps 29/50 >= 0.58 true whatever the
# rounding of either side. The same tolerance makes scores equal for tie-breaking.
_EPS = 1e-9
# vLLM's default gpu_memory_utilization: the share of a GPU the serving engine lets itself use.
SERVING_MEMORY_FRACTION = 0.9

Outcome = Literal["selected", "lower-score", "hardware", "not-probed", "accuracy", "requirements"]


class WeightsLike(Protocol):
    """alpha, beta, theta of Eq. 2 (``spec.requirements.weights`` in the API has these names)."""

    @property
    def accuracy(self) -> float: ...
    @property
    def training_time(self) -> float: ...
    @property
    def throughput(self) -> float: ...


@dataclass(frozen=True)
class ScoreWeights:
    accuracy: float = 0.5
    training_time: float = 0.2
    throughput: float = 0.3


@dataclass(frozen=True)
class HardwareFit:
    """Whether a student can be LoRA-trained and served on one GPU of the chosen node, and why."""

    fits: bool
    reason: str
    training_memory_gib: float
    serving_memory_gib: float
    gpu_memory_gib: float


def _gib_pair(need: float, have: float) -> tuple[str, str]:
    """Format two sizes so that they never print equal when they differ."""
    for digits in (1, 2, 3):
        a, b = f"{need:.{digits}f}", f"{have:.{digits}f}"
        if a != b or need == have:
            return a, b
    return f"{need:.3f}", f"{have:.3f}"


def hardware_fit(
    facts: ModelFacts,
    gpu_memory_gib: float,
    *,
    sequence_length: int,
    micro_batch_size: int,
    lora_rank: int,
    gradient_checkpointing: bool,
    context_length: int,
    serving: bool = True,
    serving_batch: int = 1,
    serving_memory_fraction: float = SERVING_MEMORY_FRACTION,
) -> HardwareFit:
    """Training must fit one GPU's memory; serving must fit ``serving_memory_fraction`` of it.

    Per GPU because data-parallel LoRA training and single-GPU serving both hold a whole replica of
    the model on every GPU. Serving is checked against 90% of the GPU, the share vLLM takes by
    default (``gpu_memory_utilization``); with ``serving=False`` only training is checked.
    """
    train = training_memory_gib(
        facts,
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_rank=lora_rank,
        gradient_checkpointing=gradient_checkpointing,
    )
    serve = serving_memory_gib(facts, context_length=context_length, batch=serving_batch) if serving else 0.0
    usable = gpu_memory_gib * serving_memory_fraction
    problems = []
    if train > gpu_memory_gib:
        need, have = _gib_pair(train, gpu_memory_gib)
        problems.append(f"LoRA training needs {need} GiB, has {have} GiB")
    if serving and serve > usable:
        need, have = _gib_pair(serve, usable)
        problems.append(f"serving needs {need} GiB, has {have} GiB usable of {gpu_memory_gib:.1f} GiB")
    if problems:
        reason = f"exceeds the selected server's memory ({'; '.join(problems)})"
    else:
        served = f", serving {serve:.1f} GiB" if serving else ""
        reason = (
            f"fits the selected server's memory (training {train:.1f} GiB{served} "
            f"of {gpu_memory_gib:.1f} GiB)"
        )
    return HardwareFit(not problems, reason, train, serve, gpu_memory_gib)


def students_to_probe(fits: Mapping[str, HardwareFit]) -> list[str]:
    """Names of the students worth probing: those that fit the node, in the given order."""
    return [name for name, fit in fits.items() if fit.fits]


@dataclass(frozen=True)
class StudentAssessment:
    """One candidate's facts for Eq. 2: a from the probe (None when not probed), t, r, memory fit."""

    name: str
    parameters: float
    fits: bool
    fit_reason: str
    accuracy: float | None
    training_time_hours: float
    tokens_per_second: float
    training_memory_gib: float = 0.0
    serving_memory_gib: float = 0.0


def assess_student(
    name: str,
    facts: ModelFacts,
    fit: HardwareFit,
    *,
    gpu: GPULike,
    gpu_count: int,
    tokens: float,
    mfu: float,
    gradient_checkpointing: bool,
    accuracy: float | None,
) -> StudentAssessment:
    """Combine the fit, the probe accuracy and the t and r estimates for one student on the node."""
    return StudentAssessment(
        name=name,
        parameters=facts.parameters,
        fits=fit.fits,
        fit_reason=fit.reason,
        accuracy=accuracy,
        training_time_hours=training_time_hours(
            facts, gpu, gpu_count, tokens=tokens, mfu=mfu, gradient_checkpointing=gradient_checkpointing
        ),
        tokens_per_second=decode_tokens_per_second(facts, gpu),
        training_memory_gib=fit.training_memory_gib,
        serving_memory_gib=fit.serving_memory_gib,
    )


@dataclass(frozen=True)
class StudentVerdict:
    """One candidate as recorded in status.student.candidates[], plus the machine-readable outcome."""

    name: str
    parameters: float
    accuracy: float | None
    training_time_hours: float
    tokens_per_second: float
    training_memory_gib: float
    serving_memory_gib: float
    score: float | None
    verdict: str
    outcome: Outcome

    def status_fields(self) -> dict[str, Any]:
        """The fields status.student.candidates[] has (snake_case attribute names)."""
        return {
            "name": self.name,
            "parameters": self.parameters,
            "accuracy": self.accuracy,
            "training_time_hours": self.training_time_hours,
            "tokens_per_second": self.tokens_per_second,
            "training_memory_gib": self.training_memory_gib,
            "serving_memory_gib": self.serving_memory_gib,
            "score": self.score,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class StudentChoice:
    """The decision: the winner (None when nobody survives), why, every candidate's verdict (input
    order) and the survivors best first (the fallback order: when a trained student misses
    minAccuracy, the next one is trained)."""

    selected: str | None
    reason: str
    candidates: tuple[StudentVerdict, ...]
    ranking: tuple[str, ...]


def _num(x: float) -> str:
    return f"{x:.4g}"


def _params(n: float) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def _normalise(values: Sequence[float], *, constant: float) -> list[float]:
    lo, hi = min(values), max(values)
    if hi - lo <= _EPS * max(1.0, abs(hi)):
        return [constant] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def _requirement_problems(c: StudentAssessment, max_training_hours: float, min_tps: float) -> list[str]:
    problems = []
    if c.training_time_hours > max_training_hours + _EPS:
        problems.append(f"training time {_num(c.training_time_hours)} h exceeds {_num(max_training_hours)} h")
    if c.tokens_per_second < min_tps - _EPS:
        problems.append(f"throughput {c.tokens_per_second:.0f} tok/s below {_num(min_tps)}")
    return problems


def select_student(
    candidates: Iterable[StudentAssessment],
    *,
    min_accuracy: float,
    max_training_hours: float,
    min_tokens_per_second: float,
    weights: WeightsLike,
) -> StudentChoice:
    """Apply the filters and Eq. 2 (see the module docstring); return the decision with every verdict."""
    cands = list(candidates)
    names = [c.name for c in cands]
    if len(set(names)) != len(names):
        raise ValueError("student names must be unique")
    alpha, beta, theta = weights.accuracy, weights.training_time, weights.throughput
    if min(alpha, beta, theta) < 0 or alpha + beta + theta <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    total = alpha + beta + theta
    alpha, beta, theta = alpha / total, beta / total, theta / total

    dropped: dict[str, tuple[Outcome, str]] = {}
    survivors: list[StudentAssessment] = []
    for c in cands:
        if not c.fits:
            dropped[c.name] = ("hardware", c.fit_reason)
        elif c.accuracy is None:
            dropped[c.name] = ("not-probed", "no probe accuracy (the student-probe did not report)")
        elif c.accuracy < min_accuracy - _EPS:
            dropped[c.name] = (
                "accuracy",
                f"accuracy below threshold ({_num(c.accuracy)} < {_num(min_accuracy)})",
            )
        elif problems := _requirement_problems(c, max_training_hours, min_tokens_per_second):
            dropped[c.name] = ("requirements", "; ".join(problems))
        else:
            survivors.append(c)

    scores: dict[str, float] = {}
    if survivors:
        a_n = _normalise([c.accuracy or 0.0 for c in survivors], constant=1.0)
        t_n = _normalise([c.training_time_hours for c in survivors], constant=0.0)
        r_n = _normalise([c.tokens_per_second for c in survivors], constant=1.0)
        for c, a, t, r in zip(survivors, a_n, t_n, r_n, strict=True):
            scores[c.name] = alpha * a + beta * (1 - t) + theta * r
    ranked = sorted(
        survivors,
        key=lambda c: (-round(scores[c.name] / _EPS), -(c.accuracy or 0.0), c.parameters, c.name),
    )
    winner = ranked[0] if ranked else None

    verdicts = []
    for c in cands:
        score = scores.get(c.name)
        if c.name in dropped:
            outcome, verdict = dropped[c.name]
        elif winner is not None and c.name == winner.name:
            outcome = "selected"
            verdict = f"balanced performance and deployability (highest score {scores[c.name]:.2f})"
            if len(survivors) == 1:
                verdict += "; the only student meeting every requirement"
        else:
            assert winner is not None and score is not None
            outcome = "lower-score"
            best = scores[winner.name]
            if round(score / _EPS) == round(best / _EPS):
                verdict = f"same score as {winner.name} ({score:.2f}); {_tie_reason(c, winner)}"
            else:
                verdict = f"lower score ({score:.2f} vs {best:.2f})"
        verdicts.append(
            StudentVerdict(
                name=c.name,
                parameters=c.parameters,
                accuracy=c.accuracy,
                training_time_hours=c.training_time_hours,
                tokens_per_second=c.tokens_per_second,
                training_memory_gib=c.training_memory_gib,
                serving_memory_gib=c.serving_memory_gib,
                score=score,
                verdict=verdict,
                outcome=outcome,
            )
        )

    if winner is None:
        if not cands:
            reason = "no student candidates"
        else:
            reason = "no student meets the requirements: " + "; ".join(
                f"{v.name}: {v.verdict}" for v in verdicts
            )
        return StudentChoice(None, reason, tuple(verdicts), ())
    reason = (
        f"{winner.name}: balanced performance and deployability (highest score {scores[winner.name]:.2f}, "
        f"accuracy {_num(winner.accuracy or 0.0)}, training {_num(winner.training_time_hours)} h, "
        f"{winner.tokens_per_second:.0f} tok/s); {len(survivors)} of {len(cands)} candidates met every "
        "requirement"
    )
    return StudentChoice(winner.name, reason, tuple(verdicts), tuple(c.name for c in ranked))


def _tie_reason(loser: StudentAssessment, winner: StudentAssessment) -> str:
    if (loser.accuracy or 0.0) != (winner.accuracy or 0.0):
        return f"lower accuracy ({_num(loser.accuracy or 0.0)} vs {_num(winner.accuracy or 0.0)})"
    if loser.parameters != winner.parameters:
        return f"more parameters ({_params(loser.parameters)} vs {_params(winner.parameters)})"
    return "ranked after it by name"
