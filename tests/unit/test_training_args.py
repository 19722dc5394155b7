"""The trl and peft arguments the train stage gets for a spec: the config the controller writes, parsed
by the program, read by ``stratos.training.trainers`` as is (no copy of the settings in between).

Every expected value is computed by hand from the spec below; the argument dicts are also handed to trl's
own config classes, which must accept them.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("trl")

import torch
from peft import LoraConfig
from test_stage_distill import KD_TEACHERS, KdExecutor, run_job  # the controller, driven by its machine

from stratos.contracts.train import TrainConfig
from stratos.training import trainers
from stratos.training.models import Runtime

CPU = Runtime("cpu", torch.float32, 0)
GPU = Runtime("cuda", torch.bfloat16, 2)


def spec_config(distillation: dict[str, Any], **file: Any) -> TrainConfig:
    """The train config the controller writes for ``distillation``, plus what a config file may add."""
    executor = KdExecutor({"a": 0.8})
    teachers = {"teachers": KD_TEACHERS} if distillation.get("algorithm") == "white-box-kd" else {}
    run_job(executor, distillation=distillation, **teachers)
    written = next(r for r in executor.started if r.stage == "train").config
    return TrainConfig.model_validate({**written, **file})


def test_sft_arguments_and_the_lora_adapter_come_from_the_spec() -> None:
    config = spec_config(
        {"lora": {"rank": 8, "alpha": 16, "dropout": 0.1}, "learningRate": 1e-4, "microBatchSize": 2,
         "epochs": 3, "sequenceLength": 512},
        warmupRatio=0.1, gradientAccumulationSteps=2,
    )  # fmt: skip
    run = trainers.TrainRun("/ckpt", CPU, world_size=2)
    args = trainers.sft_args(config, run, rows=1000)
    # Steps: ceil(1000 rows / (2 per device * 2 accumulated * 2 workers)) = 125 per epoch, 3 epochs = 375.
    assert args["warmup_steps"] == 37  # int(0.1 * 375)
    assert args["logging_steps"] == 3  # 375 // 100
    assert (args["learning_rate"], args["per_device_train_batch_size"]) == (1e-4, 2)
    assert (args["gradient_accumulation_steps"], args["num_train_epochs"], args["max_steps"]) == (2, 3, -1)
    assert (args["max_length"], args["completion_only_loss"], args["packing"]) == (512, True, False)
    assert (args["use_cpu"], args["bf16"], args["fp16"], args["output_dir"]) == (True, False, False, "/ckpt")
    assert (args["save_steps"], args["seed"], args["activation_checkpointing"]) == (50, 0, True)
    lora = trainers.peft_config(config.lora)
    assert isinstance(lora, LoraConfig)
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (8, 16, 0.1)
    assert (lora.target_modules, lora.bias, str(lora.task_type)) == ("all-linear", "none", "CAUSAL_LM")
    from trl import SFTConfig

    assert SFTConfig(**args).warmup_steps == 37


def test_grpo_samples_at_its_own_temperature_and_kd_at_its_own() -> None:
    config = spec_config({"algorithm": "grpo", "microBatchSize": 3, "epochs": 2})
    assert config.algorithm == "grpo" and config.warmup_ratio == 0.0
    run = trainers.TrainRun("/ckpt", GPU, world_size=2)
    args = trainers.grpo_args(config, run, rows=10)
    # Defaults: 4 generations at temperature 1.0, no KL. Steps: ceil(10 * 4 / (3 * 1 * 2)) = 7, twice = 14.
    assert (args["num_generations"], args["temperature"], args["beta"]) == (4, 1.0, 0.0)
    assert args["generation_batch_size"] == 12  # lcm(3 per device * 2 workers * 1 accumulated, 4)
    assert trainers.estimated_steps(10, config, run, per_row=4) == 14
    assert (args["warmup_steps"], args["logging_steps"]) == (0, 1)  # no warm-up unless a file asks; 14 // 100
    assert (args["bf16"], args["fp16"], args["use_cpu"]) == (True, False, False)
    tuned = TrainConfig.model_validate(
        {**config.dump(), "grpo": {"temperature": 0.7, "beta": 0.02}, "kd": {"temperature": 0.5}}
    )
    assert trainers.grpo_args(tuned, run, rows=10)["temperature"] == 0.7
    assert trainers.grpo_args(tuned, run, rows=10)["beta"] == 0.02
    assert trainers.kd_args(tuned, run, rows=10)["temperature"] == 0.5


@pytest.mark.filterwarnings("ignore:You are importing from 'trl.experimental'")
def test_white_box_kd_maps_the_divergence_onto_gkds_beta() -> None:
    config = spec_config({"algorithm": "white-box-kd"}, kd={"divergence": "jsd", "onPolicyFraction": 0.25})
    assert config.teacher_model_uri == "/models/big"
    args = trainers.kd_args(config, trainers.TrainRun("/ckpt", CPU), rows=8)
    # Defaults beside the file's: temperature 0.9, 128 new tokens; jsd is GKD's beta 0.5.
    assert (args["beta"], args["lmbda"], args["temperature"], args["max_new_tokens"]) == (0.5, 0.25, 0.9, 128)
    assert (args["max_length"], args["disable_dropout"], args["seq_kd"]) == (1024, True, False)
    assert (args["learning_rate"], args["per_device_train_batch_size"]) == (2e-4, 4)
    from trl.experimental.gkd import GKDConfig

    assert GKDConfig(**args).beta == 0.5
