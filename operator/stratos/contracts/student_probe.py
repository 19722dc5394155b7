"""The student-probe stage's contract: which student to ask which probe questions, and what it scored.

The probe questions are teacher-eval's (same task, sample size and seed); ``tracesPath`` names the
chosen teacher's traces to show the student. The result's ``tokensPerSecond`` is the decode speed
measured on the node, next to the accuracy the controller compares with ``minAccuracy``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from stratos.contracts.stage_io import StageResult, WorkloadConfig


class StudentProbeConfig(WorkloadConfig):
    student: str = Field(min_length=1, max_length=63)
    model_uri: str = Field(min_length=1)
    task: dict[str, Any] = Field(default_factory=dict)
    sample_size: int | None = Field(None, ge=1, le=10000)
    seed: int | None = Field(None, ge=0)
    data_root: str | None = None
    traces_path: str | None = None
    correct_traces_only: bool = False
    max_new_tokens: int = Field(512, ge=1, le=32768)
    batch_size: int = Field(8, ge=1, le=1024)
    output_dir: str


class StudentProbeResult(StageResult):
    """One student's accuracy on the probe, with the teacher's reasoning where there was a trace."""

    student: str | None = None
    accuracy: float = 0.0
    samples: int = 0
    correct: int = 0
    with_reasoning: int | None = None
    tokens_per_second: float | None = None
    generated_tokens: int | None = None
    seconds: float | None = None
    answers_path: str | None = None
