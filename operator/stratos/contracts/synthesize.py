"""The synthesize stage's contract: its config (camelCase JSON as the controller writes it, validated
before any call) and its result.

The teacher connection is a nested object so that the verifier (the independent second teacher
instance the paper uses for rejection sampling) can have the same shape; without a
``verifierTeacher`` the verifier is the teacher's own endpoint, asked in separate, fresh requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from stratos.api.base import format_errors
from stratos.api.spec import TaskSpec
from stratos.contracts.stage_io import ConfigError, StageResult, WorkloadConfig, cost_field
from stratos.contracts.teacher import TeacherConnection

Strategy = Literal["alignment", "injection"]
#: How synthetic questions are made: ``mutate`` edits a seed with the task's own mutator (Mahjong's
#: mutate_hand, answer from the solver); ``teacher`` asks the teacher for a new question (Mahjong: the
#: paper's Figure 5 prompt, checked by the solver; other tasks: a new question in a seed's style,
#: checked by an independent second call); ``auto`` is ``mutate`` where the task has a mutator.
Augment = Literal["auto", "mutate", "teacher", "none"]


class SynthesizeConfig(WorkloadConfig):
    strategy: Strategy
    teacher: TeacherConnection
    verifier_teacher: TeacherConnection | None = None
    task: dict[str, Any] = Field(default_factory=dict)
    target_samples: int = Field(10000, ge=1, le=10_000_000)
    #: Seed of the choice of real questions and of synthetic candidates; default: the task's seed.
    seed: int | None = Field(None, ge=0)
    data_root: str | None = None
    output_dir: str
    #: Cap on the real training questions used (default: all of them, up to ``targetSamples``).
    max_real_samples: int | None = Field(None, ge=0)
    #: Teacher traces tried per question before it is rejected (rejection sampling).
    attempts: int = Field(3, ge=1, le=20)
    temperature: float = Field(0.7, ge=0, le=2)
    #: Temperature of the verifier's independent answer (greedy by default: its most likely answer).
    verifier_temperature: float = Field(0.0, ge=0, le=2)
    augment: Augment = "auto"
    #: ``answer``: rows end in the verified answer line alone and the teacher is asked for no reasoning
    #: (it still writes questions under ``augment: teacher``); ``reasoning``: the teacher's trace first.
    completion: Literal["reasoning", "answer"] = "reasoning"
    #: At most ``ceil(candidateFactor * targetSamples)`` synthetic candidates are tried, so a teacher
    #: whose candidates are all rejected cannot spend without bound.
    candidate_factor: float = Field(4.0, ge=0, le=1000)
    #: What the stage may spend on the teacher (USD, every run of the stage together). Each request
    #: reserves its worst-case cost (prompt bytes + maxTokens at the price) before it is sent and gives the
    #: unused part back when it returns, so requests in flight never take the stage past it; a request it
    #: cannot cover is not sent, the requests in flight finish and what was written is kept.
    budget_usd: float | None = Field(None, ge=0)

    def worst_case_usd(self) -> float:
        """Every question asked ``attempts`` times with ``maxTokens`` completions (prompts not counted)."""
        requests = self.target_samples * self.attempts
        return requests * (self.teacher.max_tokens or 0) * self.teacher.cost_per_million_tokens / 1e6

    def task_spec(self) -> TaskSpec:
        try:
            return TaskSpec.model_validate(self.task)
        except ValidationError as err:
            raise ConfigError(f"invalid task: {format_errors(err, 'task')}") from None

    def effective_seed(self, spec: TaskSpec) -> int:
        return self.seed if self.seed is not None else spec.seed


def usd_sum(amounts: Iterable[float]) -> float:
    """A total in USD that does not depend on the order its parts were added in: correctly rounded
    (``math.fsum``), then to 1e-10 USD, so a running total and a recount of the same requests agree
    exactly (a retried run reports what the first one did, not that plus a last-digit error)."""
    return round(math.fsum(amounts), 10)


class SynthesisSpend(BaseModel):
    """What the synthesize stage has spent on teacher requests, every run of it together: the spend
    ledger it keeps on the storage volume (``<outputDir>/synthesize/spend.json``, rewritten after every
    response) and what its result, or its failure result, reports. The controller charges it; a retried
    run's cap starts from it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    cost_usd: float = cost_field()
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def at_least(self, other: SynthesisSpend) -> SynthesisSpend:
        """The larger of each figure: spend only grows, whichever record saw more of it."""
        return SynthesisSpend(
            cost_usd=max(self.cost_usd, other.cost_usd),
            prompt_tokens=max(self.prompt_tokens, other.prompt_tokens),
            completion_tokens=max(self.completion_tokens, other.completion_tokens),
        )

    def report(self) -> dict[str, Any]:
        """The figures as a result carries them (camelCase)."""
        return self.model_dump(by_alias=True)


class SynthesizeResult(StageResult):
    """What the synthesize stage reports: the dataset it wrote and what the teacher cost."""

    strategy: str | None = None
    augment: str | None = None
    target: int | None = None
    kept: int | None = None
    real: int | None = None
    synthetic: int | None = None
    #: Rejected candidates by reason, and their total.
    rejected: dict[str, int] = Field(default_factory=dict)
    rejected_total: int | None = None
    real_questions: int | None = None
    #: Samples in the task's test split (the same task the evaluate stage loads, which answers all of
    #: them): what the operator's evaluation estimate counts.
    test_samples: int | None = None
    attempts: int | None = None
    requests: int | None = None
    resumed: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = cost_field()
    #: ``budget`` when the stage stopped at ``budgetUsd`` before ``targetSamples``.
    stopped_early: str | None = None
    dataset_path: str | None = None

    def spend(self) -> SynthesisSpend:
        """What the stage spent, as far as this result (or failure result) says."""
        return SynthesisSpend(
            cost_usd=self.cost_usd,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )
