"""The vocab-check stage's contract: the (teacher weights, student) models to compare, and the verdict.

A mismatch is a finding, not a failure: the stage succeeds with ``shared: false`` and one message per
pair that differs.
"""

from __future__ import annotations

from pydantic import Field

from stratos.contracts.stage_io import StageResult, WorkloadConfig


class NamedModel(WorkloadConfig):
    name: str = Field(min_length=1, max_length=63)
    uri: str = Field(min_length=1)


class VocabCheckConfig(WorkloadConfig):
    students: list[NamedModel] = Field(min_length=1)
    teachers: list[NamedModel] = Field(min_length=1)
    data_root: str | None = None


class VocabCheckResult(StageResult):
    """Whether every pair shares one vocabulary; why not, per pair."""

    shared: bool = False
    checked: int | None = None
    mismatches: list[str] = Field(default_factory=list)
