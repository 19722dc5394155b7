"""The train stage's contract: ``TrainConfig``, the one model of the training settings from the spec to
trl, and ``TrainResult``, what the stage reports.

The controller builds a ``TrainConfig`` from ``spec.distillation`` (its ``lora`` is the API's own
``LoraSpec``, not a copy) and the decisions so far; the program (``stratos.workloads.train``) parses the
same model and hands it to the trainer builders of ``stratos.training.trainers``, which read trl's
arguments and peft's ``LoraConfig`` off it. The per-algorithm blocks (``grpo``, ``dpo``, ``kd``) are
not in the API: their defaults apply unless a config file sets them. The result carries steps, loss,
wall time, where the adapter (and the merged weights, when serving needs them) went, and the longest
target trained on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from stratos.api.spec import LoraSpec
from stratos.contracts.stage_io import StageResult, WorkloadConfig

Algorithm = Literal["sft-lora", "grpo", "dpo", "white-box-kd"]


class GrpoOptions(WorkloadConfig):
    """``grpo``: completions sampled per prompt, their length and temperature, the KL penalty."""

    num_generations: int = Field(4, ge=2, le=64)
    max_completion_length: int = Field(256, ge=1)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0)


class DpoOptions(WorkloadConfig):
    """``dpo``: the preference strength, and how the student's own (rejected) answers are generated."""

    beta: float = Field(0.1, gt=0)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(8, ge=1)


class KdOptions(WorkloadConfig):
    """``white-box-kd``: the divergence, the share of on-policy steps, their length and temperature."""

    divergence: Literal["forward-kl", "reverse-kl", "jsd"] = "forward-kl"
    on_policy_fraction: float = Field(0.0, ge=0, le=1)
    max_new_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.9, gt=0)


class TrainConfig(WorkloadConfig):
    """What the train stage trains, on what, with which settings, and when it must stop."""

    algorithm: Algorithm = "sft-lora"
    student: str | None = None
    model_uri: str = Field(min_length=1)
    teacher_model_uri: str | None = None
    dataset_path: str = Field(min_length=1)
    output_dir: str = Field(min_length=1)
    data_root: str | None = None
    task: dict[str, Any] | None = None
    lora: LoraSpec = Field(default_factory=LoraSpec)
    epochs: int = Field(1, ge=1, le=100)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    #: The share of the estimated steps over which the learning rate warms up (the controller leaves it 0).
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    micro_batch_size: int = Field(4, ge=1, le=1024)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    sequence_length: int = Field(1024, ge=16, le=131072)
    gradient_checkpointing: bool = True
    max_steps: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0)
    #: When the stage's first attempt started (RFC 3339): maxSeconds is measured from there, so neither a
    #: retried pod nor a Job re-created on another node starts the clock again.
    started_at: datetime | None = None
    save_steps: int = Field(50, ge=1)
    merge: bool = False
    seed: int = Field(0, ge=0)
    grpo: GrpoOptions = Field(default_factory=GrpoOptions)
    dpo: DpoOptions = Field(default_factory=DpoOptions)
    kd: KdOptions = Field(default_factory=KdOptions)


class TrainResult(StageResult):
    """What the train stage reports."""

    algorithm: str | None = None
    steps: int | None = None
    total_steps: int | None = None
    #: ``{"first": .., "last": ..}`` (an older image wrote a single number).
    train_loss: dict[str, float | None] | float | None = None
    reward: dict[str, float | None] | None = None
    seconds: float | int | None = None
    adapter_path: str | None = None
    merged_path: str | None = None
    #: The longest completion trained on, in the student's tokens (bounds evaluation's decoding).
    longest_target_tokens: int | None = None
    base_model: str | None = None

    def last_loss(self) -> float | None:
        loss = self.train_loss
        return loss.get("last") if isinstance(loss, dict) else loss
