"""The evaluate stage's contract: the trained student (base model plus adapter) and the held-out split
to answer, and the accuracy it reached.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stratos.contracts.stage_io import StageResult, WorkloadConfig


class EvaluateConfig(WorkloadConfig):
    student: str = Field("student", min_length=1, max_length=63)
    model_uri: str | None = None
    adapter_path: str | None = None
    task: dict[str, Any] = Field(default_factory=dict)
    data_root: str | None = None
    split: Literal["test", "train"] = "test"
    max_samples: int | None = Field(None, ge=1)
    max_new_tokens: int = Field(512, ge=1, le=32768)
    batch_size: int = Field(8, ge=1, le=1024)
    baseline: bool = False
    output_dir: str


class EvaluateResult(StageResult):
    """Held-out accuracy of the trained student (and of its base model, with ``baseline``)."""

    student: str | None = None
    accuracy: float = 0.0
    samples: int | None = None
    correct: int | None = None
    baseline: dict[str, Any] | None = None
    tokens_per_second: float | None = None
    seconds: float | None = None
    adapter_path: str | None = None
    predictions_path: str | None = None
