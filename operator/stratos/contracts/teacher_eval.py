"""The teacher-eval stage's contract: a teacher connection plus the probe to ask it, and the result.

The config is flat camelCase JSON: the connection's fields with the teacher's name under ``teacher``,
then the task and where the traces go. The result carries the accuracy on the probe sample and what it
cost (``costUsd``, as in ``status.cost``).
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

from stratos.contracts.stage_io import StageResult, cost_field
from stratos.contracts.teacher import TeacherConnection


class TeacherEvalConfig(TeacherConnection):
    """A teacher connection (its name under ``teacher``) and the probe sample to ask it."""

    name: str = Field(
        alias="teacher", validation_alias=AliasChoices("teacher", "name"), min_length=1, max_length=63
    )
    task: dict[str, Any] = Field(default_factory=dict)
    sample_size: int | None = Field(None, ge=1, le=10000)
    seed: int | None = Field(None, ge=0)
    data_root: str | None = None
    output_dir: str
    temperature: float | None = Field(0.0, ge=0)


class TeacherEvalResult(StageResult):
    """How one teacher did on the probe sample."""

    teacher: str | None = None
    accuracy: float = 0.0
    samples: int = 0
    correct: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = cost_field()
    traces_path: str | None = None
    #: Requests made by this run, traces reused from an earlier one, requests the endpoint refused.
    requests: int | None = None
    resumed: int | None = None
    rejected: int | None = None
