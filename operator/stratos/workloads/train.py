"""Train stage: distil into the chosen student with LoRA (paper, "Knowledge Alignment"/"Injection").

``python -m stratos.workloads.train --config CONFIG [--result /dev/termination-log]``

Algorithms (``stratos.training.trainers``): ``sft-lora`` (SFTTrainer), ``grpo`` (GRPOTrainer with the task
verifier as reward; needs ``task``), ``dpo`` (DPOTrainer; chosen = teacher, rejected = the student's own
answer unless the rows carry chosen/rejected, see ``stratos.training.data``), ``white-box-kd``
(GKDTrainer against local teacher weights at ``teacherModelUri``; refused when the vocabularies differ).

Files under ``outputDir``: ``checkpoints/checkpoint-N`` (every ``saveSteps`` and at the last step; a
restarted pod resumes from the newest complete one and the step count continues), ``adapter/`` (the
LoRA adapter, tokenizer, and ``stratos.json`` naming the base model URI and algorithm), ``merged/`` (full
weights with the adapter merged in, when ``merge``).

Stopping: ``maxSteps`` caps the steps; ``maxSeconds`` (from the stage's start, model loading included)
stops early, saving a checkpoint and the adapter before the deadline (``stoppedEarly: "deadline"``);
SIGTERM stops at the next step end with a checkpoint, then the stage reports ``Terminated``.
Progress goes to stdout: ``step 12/40 (30%) loss 1.8732 lr 1.5e-04 elapsed 0:01:02 eta 0:02:41``.

Several GPUs: the stage re-executes itself under torchrun, one data-parallel worker per GPU
(``stratos.training.launch``); untested here (no GPU where the tests run).

Config (``stratos.contracts.train.TrainConfig``, camelCase JSON; ``lora`` is the API's ``LoraSpec``)::

    {"algorithm": "sft-lora", "student": "llama-3.2-3b", "modelUri": "hf://meta-llama/Llama-3.2-3B-Instruct",
     "datasetPath": "/var/lib/stratos/jobs/x/data/train.jsonl", "outputDir": "/var/lib/stratos/jobs/x/train",
     "dataRoot": "/var/lib/stratos", "task": {<TaskSpec JSON>, needed by grpo and dpo},
     "lora": {"rank": 16, "alpha": 32, "dropout": 0.05}, "epochs": 1, "learningRate": 2e-4,
     "warmupRatio": 0.0, "microBatchSize": 4, "gradientAccumulationSteps": 1, "sequenceLength": 1024,
     "gradientCheckpointing": true, "maxSteps": null, "maxSeconds": 7200, "saveSteps": 50, "merge": false,
     "startedAt": "2025-01-31T12:00:00Z" (the stage's first attempt: maxSeconds counts from it),
     "seed": 0, "teacherModelUri": null,
     "grpo": {"numGenerations": 4, "maxCompletionLength": 256, "temperature": 1.0, "beta": 0.0},
     "dpo": {"beta": 0.1, "maxNewTokens": 256, "batchSize": 8},
     "kd": {"divergence": "forward-kl", "onPolicyFraction": 0.0, "maxNewTokens": 128, "temperature": 0.9}}

Result::

    {"ok": true, "algorithm": "sft-lora", "steps": 40, "totalSteps": 40,
     "trainLoss": {"first": 2.1, "last": 0.4}, "reward": {"first": .., "last": ..} (grpo only),
     "seconds": 812.3, "adapterPath": ".../adapter", "mergedPath": null,
     "resumedFrom": ".../checkpoints/checkpoint-20" | null, "stoppedEarly": null | "deadline",
     "rows": 10000, "droppedRows": 0 (dpo: pairs where the student was already right),
     "longestTargetTokens": 412 (the longest completion trained on, in the student's tokens: the
     evaluation's decoding budget derives from it), "baseModel": "SmolLM2 135M Instruct (GGUF Q4_1 ...)"}
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from stratos.contracts.stage_io import ConfigError
from stratos.contracts.train import TrainConfig
from stratos.decide.budget import seconds_left
from stratos.workloads.common import Terminated, run_stage

log = logging.getLogger("stratos.workloads.train")

MODULE = "stratos.workloads.train"


def training_deadline(config: TrainConfig, ledger_deadline: float | None) -> float | None:
    """The monotonic time this pod must stop by: the sooner of what the time ledger leaves (the seconds
    earlier pods recorded) and ``maxSeconds`` from the stage's first attempt (``startedAt``, wall clock:
    it also covers what a killed pod never got to record)."""
    if config.max_seconds is None or config.started_at is None:
        return ledger_deadline
    left = seconds_left(config.max_seconds, config.started_at.timestamp(), time.time())
    wall = time.monotonic() + left
    if left < config.max_seconds:
        used = config.max_seconds - left
        log.info("%.0f s of maxSeconds used since the first attempt at %s", used, config.started_at)
    return wall if ledger_deadline is None else min(wall, ledger_deadline)


@contextmanager
def stop_on_sigterm(stopper: Any) -> Iterator[None]:
    """While training, SIGTERM asks for a checkpoint and a stop instead of killing the step."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log.warning("SIGTERM: finishing this step, then saving a checkpoint")
        stopper.request_stop()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(config: TrainConfig) -> dict[str, Any]:
    began = time.monotonic()  # before the heavy imports: maxSeconds covers them too
    from stratos.training import data, launch
    from stratos.training.callbacks import ProgressLogger, StopAndSave, TimeLedger, save_reserve
    from stratos.training.checkpoints import (
        copy_adapter,
        first_last,
        is_finished,
        last_checkpoint,
        read_state,
    )
    from stratos.training.models import (
        dequantised,
        describe_model,
        load_model,
        load_tokenizer,
        quiet_libraries,
        resolve_model_uri,
        runtime,
        write_adapter_metadata,
    )
    from stratos.training.tasking import load_task, local_file
    from stratos.training.vocab import check_vocabularies

    quiet_libraries()
    if config.algorithm == "white-box-kd" and not config.teacher_model_uri:
        raise ConfigError("white-box-kd needs teacherModelUri: local teacher weights to take logits from")
    if config.algorithm == "grpo" and not config.task:
        raise ConfigError("grpo needs task: its verifier is the reward")
    rt = runtime()
    ref = resolve_model_uri(config.model_uri, data_root=config.data_root)
    teacher_ref = None
    if config.algorithm == "white-box-kd":
        teacher_ref = resolve_model_uri(str(config.teacher_model_uri), data_root=config.data_root)
        check_vocabularies(ref, teacher_ref)
    base_model = describe_model(ref)
    ref = dequantised(ref, rt=rt)  # a GGUF file: its dense copy, made once per storage
    task = load_task(config.task, data_root=config.data_root)[0] if config.task else None
    rows = data.read_rows(local_file(config.dataset_path, data_root=config.data_root))

    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    resume = last_checkpoint(checkpoints)
    log.info(
        "%s on %s (%s, %d rows)%s",
        config.algorithm,
        config.model_uri,
        rt.device,
        len(rows),
        f", resuming from {resume}" if resume else "",
    )
    tokenizer = load_tokenizer(ref)
    longest = _longest_target(config, rows, tokenizer)
    adapter_dir = out / "adapter"
    merged_dir = out / "merged" if config.merge else None
    main_process = launch.rank() == 0
    trained: Any = None  # the PeftModel, when this run trained
    dropped = 0
    # maxSeconds is for the whole training, not per pod: earlier pods' time comes off it.
    ledger = TimeLedger(out / "seconds-used", began, writer=main_process)
    if ledger.before:
        log.info("%.0f s of maxSeconds used by earlier pods", ledger.before)
    stopper = StopAndSave(
        deadline=training_deadline(config, ledger.deadline(config.max_seconds)),
        reserve=save_reserve(config.max_seconds or 0.0, merge=config.merge),
        ledger=ledger,
    )
    if resume is not None and is_finished(resume, config.max_steps):
        log.info("%s already reached the last step; saving its adapter", resume)
        state = read_state(resume)
        if main_process:
            copy_adapter(resume, adapter_dir)
        history, steps, total = state.get("log_history", []), state["global_step"], state["max_steps"]
    else:
        model = load_model(ref, rt=rt, for_training=True)
        dataset, dropped = _dataset(config, rows, model, tokenizer, task)
        trainer = _build(
            config,
            model,
            tokenizer,
            dataset,
            task,
            teacher_ref,
            rt,
            str(checkpoints),
            [ProgressLogger(config.algorithm), stopper],
        )
        with stop_on_sigterm(stopper):
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        trainer.save_model(str(adapter_dir))
        trained = trainer.model
        history, steps, total = trainer.state.log_history, trainer.state.global_step, trainer.state.max_steps

    if main_process:
        tokenizer.save_pretrained(str(adapter_dir))
        write_adapter_metadata(
            adapter_dir,
            base_model_uri=config.model_uri,
            algorithm=config.algorithm,
            student=config.student,
            steps=steps,
        )
        if merged_dir is not None:
            _merge(trained, ref, rt, adapter_dir, merged_dir, tokenizer)
    if stopper.stop_reason == "terminated":
        raise Terminated(f"terminated at step {steps}; checkpoint saved to resume from")

    result: dict[str, Any] = {
        "algorithm": config.algorithm,
        "steps": steps,
        "totalSteps": total,
        "trainLoss": first_last(history, "loss"),
        "seconds": round(time.monotonic() - began, 3),
        "adapterPath": str(adapter_dir.resolve()),
        "mergedPath": str(merged_dir.resolve()) if merged_dir else None,
        "resumedFrom": str(resume.resolve()) if resume else None,
        "stoppedEarly": stopper.stop_reason,
        "rows": len(rows),
        "droppedRows": dropped,
        "longestTargetTokens": longest,
        "baseModel": base_model,
    }
    if config.algorithm == "grpo":
        result["reward"] = first_last(history, "reward")
    log.info("trained %d/%d steps, loss %s", result["steps"], result["totalSteps"], result["trainLoss"])
    return result


def _longest_target(config: TrainConfig, rows: list[dict[str, Any]], tokenizer: Any) -> int:
    """Tokens of the longest completion the student learns to write, as far as its sequence fits in
    ``sequenceLength`` (GRPO: its sampled completions, at most ``maxCompletionLength``)."""
    from stratos.training import data

    if config.algorithm == "grpo":
        return min(config.grpo.max_completion_length, config.sequence_length)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_prompt(messages: list[dict[str, str]]) -> int:
        return count(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    return data.longest_target_tokens(rows, count, cap=config.sequence_length, count_prompt=count_prompt)


def _merge(trained: Any, ref: Any, rt: Any, adapter_dir: Path, merged_dir: Path, tokenizer: Any) -> None:
    """Full weights with the adapter folded in, for engines that serve no adapters."""
    from stratos.training.models import load_adapter, load_model

    log.info("merging the adapter into the base weights: %s", merged_dir)
    if trained is None:  # a restarted pod that had nothing left to train
        trained = load_adapter(load_model(ref, rt=rt), adapter_dir)
    merged = trained.merge_and_unload()
    merged.save_pretrained(str(merged_dir))
    tokenizer.save_pretrained(str(merged_dir))


def _dataset(
    config: TrainConfig, rows: list[dict[str, Any]], model: Any, tokenizer: Any, task: Any
) -> tuple[Any, int]:
    from stratos.tasks import Sample
    from stratos.training import data
    from stratos.training.distributed import ensure_process_group, map_sharded, world
    from stratos.training.generation import generate

    if config.algorithm == "sft-lora":
        return data.sft_dataset(rows), 0
    if config.algorithm == "grpo":
        return data.grpo_dataset(rows, extract=task.extract), 0
    if config.algorithm == "white-box-kd":
        return data.kd_dataset(rows), 0

    def answer(prompts: list[list[dict[str, str]]]) -> list[str]:
        answers, _ = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=config.dpo.max_new_tokens,
            batch_size=config.dpo.batch_size,
        )
        return [a.text for a in answers]

    def student_answers(prompts: list[list[dict[str, str]]]) -> list[str]:
        # Under torchrun each rank answers its share of the prompts; all get every answer back.
        ensure_process_group()
        rank, size = world()
        log.info(
            "dpo: generating the student's own answers to %d prompts (the rejected side)%s",
            len(prompts),
            f", rank {rank} of {size} takes every {size}th" if size > 1 else "",
        )
        return map_sharded(answer, prompts)

    def is_correct(answer: str, row: dict[str, Any]) -> bool:
        if task is None or row.get("answer") is None:
            return False
        sample = Sample(id=str(row.get("id", "")), question="", answer=str(row["answer"]))
        return bool(task.score(answer, sample))

    dataset, dropped = data.dpo_dataset(rows, student_answers=student_answers, is_correct=is_correct)
    if dropped:
        log.info("dpo: %d rows dropped (the student already answers them correctly)", dropped)
    return dataset, dropped


def _build(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    dataset: Any,
    task: Any,
    teacher_ref: Any,
    rt: Any,
    checkpoints: str,
    callbacks: list[Any],
) -> Any:
    from stratos.training import trainers
    from stratos.training.models import load_model

    run = trainers.TrainRun(
        output_dir=checkpoints, runtime=rt, world_size=int(os.environ.get("WORLD_SIZE", "1"))
    )
    if config.algorithm == "sft-lora":
        return trainers.build_sft(model, tokenizer, dataset, config, run, callbacks)
    if config.algorithm == "grpo":
        return trainers.build_grpo(model, tokenizer, dataset, config, run, callbacks, task)
    if config.algorithm == "dpo":
        return trainers.build_dpo(model, tokenizer, dataset, config, run, callbacks)
    teacher = load_model(teacher_ref, rt=rt, for_training=True)
    return trainers.build_kd(model, tokenizer, dataset, config, run, callbacks, teacher)


def main(argv: list[str] | None = None) -> int:
    from stratos.training import launch

    args = list(sys.argv[1:] if argv is None else argv)
    if not launch.is_worker():
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if launch.should_relaunch(gpus):
            return launch.relaunch(MODULE, args, gpus)
    elif launch.rank() != 0:
        args = [*launch.with_result(args, os.devnull), "--log-level", "WARNING"]
    return run_stage("train", TrainConfig, train, args)


if __name__ == "__main__":
    raise SystemExit(main())
