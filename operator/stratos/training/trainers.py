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

The builders take the stage's ``TrainConfig`` itself (``stratos.contracts.train``, the one model of the
settings from the spec on) and a ``TrainRun`` with what only exists once the stage runs: the checkpoint
directory, the device, the number of data-parallel workers. ``common_args`` maps the shared settings
onto ``TrainingArguments``: bf16 on GPUs that have it, fp32 on CPU, checkpoints under ``output_dir`` every
``saveSteps`` (two kept), no external reporting, tqdm off (``callbacks.ProgressLogger`` logs instead);
``sft_args``/``grpo_args``/``dpo_args``/``kd_args`` add each trainer's own (the sampling temperature is
``grpo.temperature`` for GRPO, ``kd.temperature`` for GKD). ``peft_config`` is the adapter of
``config.lora`` (the API's ``LoraSpec``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from peft import LoraConfig
from transformers import PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from stratos.api.spec import LoraSpec
from stratos.contracts.stage_io import StageError
from stratos.contracts.train import TrainConfig
from stratos.tasks import Sample, Task
from stratos.training.models import Runtime

DIVERGENCE_BETA = {"forward-kl": 0.0, "jsd": 0.5, "reverse-kl": 1.0}


@dataclass(frozen=True)
class TrainRun:
    """The facts of this run that are not settings: where checkpoints go, the device, the workers."""

    output_dir: str
    runtime: Runtime
    world_size: int = 1


def peft_config(lora: LoraSpec) -> LoraConfig:
    """The LoRA adapter: every linear projection of the blocks (attention q/k/v/o and the MLP), not
    lm_head ("all-linear"), no bias."""
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear",
        bias="none",
        task_type="CAUSAL_LM",
    )


def estimated_steps(rows: int, config: TrainConfig, run: TrainRun, *, per_row: int = 1) -> int:
    """Optimizer steps the run will take (``maxSteps`` wins), for the logging interval and the warm-up."""
    if config.max_steps:
        return config.max_steps
    per_step = config.micro_batch_size * config.gradient_accumulation_steps * run.world_size
    return max(1, math.ceil(rows * per_row / per_step)) * config.epochs


def common_args(config: TrainConfig, run: TrainRun, total_steps: int) -> dict[str, Any]:
    """The ``TrainingArguments`` every trainer shares."""
    return dict(
        output_dir=run.output_dir,
        per_device_train_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate,
        warmup_steps=int(config.warmup_ratio * total_steps),
        logging_steps=max(1, total_steps // 100),
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,
        seed=config.seed,
        data_seed=config.seed,
        bf16=run.runtime.bf16,
        fp16=run.runtime.fp16,
        use_cpu=run.runtime.device == "cpu",
        activation_checkpointing=config.gradient_checkpointing,
        dataloader_num_workers=0,
    )


def sft_args(config: TrainConfig, run: TrainRun, rows: int) -> dict[str, Any]:
    """``SFTConfig``: loss on the completion only, no packing."""
    total = estimated_steps(rows, config, run)
    return dict(
        **common_args(config, run, total),
        max_length=config.sequence_length,
        packing=False,
        completion_only_loss=True,
    )


def grpo_args(config: TrainConfig, run: TrainRun, rows: int) -> dict[str, Any]:
    """``GRPOConfig``: ``grpo.numGenerations`` completions per prompt, sampled at ``grpo.temperature``."""
    grpo = config.grpo
    global_batch = config.micro_batch_size * run.world_size
    # Each generation batch must hold whole groups of num_generations completions of one prompt.
    generation_batch = math.lcm(global_batch * config.gradient_accumulation_steps, grpo.num_generations)
    total = estimated_steps(rows, config, run, per_row=grpo.num_generations)
    return dict(
        **common_args(config, run, total),
        num_generations=grpo.num_generations,
        max_completion_length=grpo.max_completion_length,
        temperature=grpo.temperature,
        beta=grpo.beta,
        generation_batch_size=generation_batch,
        remove_unused_columns=False,
    )


def dpo_args(config: TrainConfig, run: TrainRun, rows: int) -> dict[str, Any]:
    """``DPOConfig``: the preference strength ``dpo.beta``."""
    total = estimated_steps(rows, config, run)
    return dict(**common_args(config, run, total), max_length=config.sequence_length, beta=config.dpo.beta)


def kd_args(config: TrainConfig, run: TrainRun, rows: int) -> dict[str, Any]:
    """``GKDConfig``: the divergence as GKD's ``beta``, on-policy steps as ``lmbda``, sampled at
    ``kd.temperature``."""
    kd = config.kd
    total = estimated_steps(rows, config, run)
    return dict(
        **common_args(config, run, total),
        max_length=config.sequence_length,
        beta=DIVERGENCE_BETA[kd.divergence],
        lmbda=kd.on_policy_fraction,
        temperature=kd.temperature,
        max_new_tokens=kd.max_new_tokens,
        disable_dropout=True,
        seq_kd=False,
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
    config: TrainConfig,
    run: TrainRun,
    callbacks: list[TrainerCallback],
) -> Any:
    from trl import SFTConfig, SFTTrainer

    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**sft_args(config, run, len(dataset))),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora),
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
    config: TrainConfig,
    run: TrainRun,
    callbacks: list[TrainerCallback],
    task: Task,
) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    tokenizer.padding_side = "left"
    reward: Any = verifier_reward(task)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=GRPOConfig(**grpo_args(config, run, len(dataset))),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora),
        callbacks=callbacks,
    )
    return _finish(trainer)


def build_dpo(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    config: TrainConfig,
    run: TrainRun,
    callbacks: list[TrainerCallback],
) -> Any:
    from trl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=DPOConfig(**dpo_args(config, run, len(dataset))),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora),
        callbacks=callbacks,
    )
    return _finish(trainer)


def build_kd(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Any,
    config: TrainConfig,
    run: TrainRun,
    callbacks: list[TrainerCallback],
    teacher: Any,
) -> Any:
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    trainer = GKDTrainer(
        model=model,
        teacher_model=teacher,
        args=GKDConfig(**kd_args(config, run, len(dataset))),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(config.lora),
        callbacks=callbacks,
    )
    return _finish(trainer)
