"""One trl trainer per distillation algorithm, all training a LoRA adapter on the student.

- ``sft-lora``: ``trl.SFTTrainer`` on prompt-completion rows (loss on the teacher's answer only);
- ``grpo``: ``trl.GRPOTrainer`` whose single reward function is the task verifier: 1.0 when the answer
  extracted from a sampled completion verifies against the row's ``answer``, else 0.0 (alignment only:
  the paper rules RL out for injection, where the student has no knowledge to be rewarded for);
- ``dpo``: ``trl.DPOTrainer`` on chosen/rejected pairs, the reference being the student with its adapter
  disabled (no second copy of the weights);
- ``white-box-kd``: ``trl.experimental.gkd.GKDTrainer``, which minimises the generalised Jensen-Shannon
  divergence between the teacher's and the student's next-token distributions on the teacher-written
  dataset (``beta`` 0 = forward KL, 1 = reverse KL, 0.5 = JSD) and, with probability ``lmbda`` per step,
  on the student's own samples (on-policy distillation). GKDTrainer is used rather than trl's
  ``DistillationTrainer`` because the latter is purely on-policy (prompts only) and cannot learn from the
  dataset the synthesize stage paid the teacher for. Both need one shared vocabulary:
  ``stratos.training.vocab.check_vocabularies`` refuses a mismatched pair before any weights are loaded.

Common settings (``TrainSettings``) map onto ``TrainingArguments``: bf16 on GPUs that have it, fp32 on
CPU, checkpoints under ``output_dir`` every ``save_steps`` (two kept), no external reporting, tqdm off
(``callbacks.ProgressLogger`` logs instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from peft import LoraConfig
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from stratos.contracts.stage_io import StageError
from stratos.tasks import Sample, Task
from stratos.training.models import Runtime

ALGORITHMS = ("sft-lora", "grpo", "dpo", "white-box-kd")
DIVERGENCE_BETA = {"forward-kl": 0.0, "jsd": 0.5, "reverse-kl": 1.0}


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05

    def peft_config(self) -> LoraConfig:
        # "all-linear": every linear projection of the blocks (attention q/k/v/o and the MLP), not lm_head.
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules="all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        )


@dataclass
class TrainSettings:
    output_dir: str
    runtime: Runtime
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: int = 1
    learning_rate: float = 2e-4
    micro_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    sequence_length: int = 1024
    gradient_checkpointing: bool = True
    max_steps: int | None = None
    save_steps: int = 50
    seed: int = 0
    world_size: int = 1
    warmup_ratio: float = 0.0
    # grpo
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    kl_beta: float = 0.0
    # dpo
    dpo_beta: float = 0.1
    # white-box-kd
    divergence: str = "forward-kl"
    on_policy_fraction: float = 0.0
    kd_max_new_tokens: int = 128


def estimated_steps(rows: int, s: TrainSettings, *, per_row: int = 1) -> int:
    """Optimizer steps the run will take (``max_steps`` wins), for choosing the logging interval."""
    if s.max_steps:
        return s.max_steps
    per_step = s.micro_batch_size * s.gradient_accumulation_steps * s.world_size
    return max(1, math.ceil(rows * per_row / per_step)) * s.epochs


def common_args(s: TrainSettings, total_steps: int) -> dict[str, Any]:
    warmup = int(s.warmup_ratio * total_steps)
    return dict(
        output_dir=s.output_dir,
        per_device_train_batch_size=s.micro_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps or -1,
        learning_rate=s.learning_rate,
        warmup_steps=warmup,
        logging_steps=max(1, total_steps // 100),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        seed=s.seed,
        data_seed=s.seed,
        bf16=s.runtime.bf16,
        fp16=s.runtime.fp16,
        use_cpu=s.runtime.device == "cpu",
        activation_checkpointing=s.gradient_checkpointing,
        dataloader_num_workers=0,
    )


def _finish(trainer: Any) -> Any:
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    if len(trainer.train_dataset) == 0:
        raise StageError(
            "no training rows left after tokenisation: every prompt fills sequenceLength; "
            "raise distillation.sequenceLength",
            kind="DatasetError",
        )
    return trainer


def build_sft(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    s: TrainSettings,
    callbacks: list[TrainerCallback],
) -> Any:
    from trl import SFTConfig, SFTTrainer

    total = estimated_steps(len(dataset), s)
    args = SFTConfig(
        **common_args(s, total), max_length=s.sequence_length, packing=False, completion_only_loss=True
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=s.lora.peft_config(),
        callbacks=callbacks,
    )
    return _finish(trainer)


def verifier_reward(task: Task) -> Callable[..., list[float]]:
    """GRPO reward: 1.0 if the completion's extracted answer verifies against the row's answer."""

    def verifier(prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
        ids = kwargs.get("id") or [""] * len(completions)
        rewards = []
        for completion, expected, sample_id in zip(completions, answer, ids, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            sample = Sample(id=str(sample_id), question="", answer=str(expected))
            rewards.append(1.0 if task.score(text, sample) else 0.0)
        return rewards

    return verifier


def build_grpo(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    s: TrainSettings,
    callbacks: list[TrainerCallback],
    task: Task,
) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    tokenizer.padding_side = "left"
    global_batch = s.micro_batch_size * s.world_size
    # Each generation batch must hold whole groups of num_generations completions of one prompt.
    generation_batch = math.lcm(global_batch * s.gradient_accumulation_steps, s.num_generations)
    total = estimated_steps(len(dataset), s, per_row=s.num_generations)
    args = GRPOConfig(
        **common_args(s, total),
        num_generations=s.num_generations,
        max_completion_length=s.max_completion_length,
        temperature=s.temperature,
        beta=s.kl_beta,
        generation_batch_size=generation_batch,
        remove_unused_columns=False,
    )
    reward: Any = verifier_reward(task)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=s.lora.peft_config(),
        callbacks=callbacks,
    )
    return _finish(trainer)


def build_dpo(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    s: TrainSettings,
    callbacks: list[TrainerCallback],
) -> Any:
    from trl import DPOConfig, DPOTrainer

    total = estimated_steps(len(dataset), s)
    args = DPOConfig(**common_args(s, total), max_length=s.sequence_length, beta=s.dpo_beta)
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=s.lora.peft_config(),
        callbacks=callbacks,
    )
    return _finish(trainer)


def build_kd(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    s: TrainSettings,
    callbacks: list[TrainerCallback],
    teacher: Any,
) -> Any:
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    if s.divergence not in DIVERGENCE_BETA:
        raise StageError(
            f"unknown divergence {s.divergence!r}; expected one of {', '.join(DIVERGENCE_BETA)}",
            kind="ConfigError",
        )
    total = estimated_steps(len(dataset), s)
    args = GKDConfig(
        **common_args(s, total),
        max_length=s.sequence_length,
        beta=DIVERGENCE_BETA[s.divergence],
        lmbda=s.on_policy_fraction,
        temperature=s.temperature,
        max_new_tokens=s.kd_max_new_tokens,
        disable_dropout=True,
        seq_kd=False,
    )
    trainer = GKDTrainer(
        model=model,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=s.lora.peft_config(),
        callbacks=callbacks,
    )
    return _finish(trainer)
