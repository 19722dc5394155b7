"""Does training teach? Before/after checks on the toy task, with the real stage programs.

The toy task (support.tiny_models.TOY_FACTS) maps eight animals to four colours; its test split is its
training split, so accuracy here measures whether the model learned what it was shown. An untrained
random model answers none of them; the checks compare the model before and after training (the
evaluate stage's ``baseline`` switches the adapter off on the same questions) rather than asserting
fixed accuracies. Seeds are fixed and torch runs on one thread, so the runs are reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from stratos.workloads import evaluate, train
from support.tiny_models import one_thread, tiny_model, write_sft_dataset, write_toy_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_thread():
        yield


def _stage(main: Any, tmp_path: Path, name: str, config: dict[str, Any]) -> dict[str, Any]:
    cfg, result = tmp_path / f"{name}.json", tmp_path / f"{name}-result.json"
    cfg.write_text(json.dumps(config))
    assert main(["--config", str(cfg), "--result", str(result)]) == 0, result.read_text()
    return json.loads(result.read_text())


def _train_config(tmp_path: Path, **over: Any) -> dict[str, Any]:
    task = write_toy_task(tmp_path / "toy")
    return {
        "algorithm": "sft-lora",
        "modelUri": str(tiny_model()),
        "task": task,
        "datasetPath": str(write_sft_dataset(tmp_path / "toy", task)),
        "outputDir": str(tmp_path / "sft"),
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
        "learningRate": 1e-2,
        "microBatchSize": 8,
        "sequenceLength": 256,
        "gradientCheckpointing": False,
        "saveSteps": 1000,
        "seed": 0,
        **over,
    }


def _evaluate(tmp_path: Path, task: dict[str, Any], **over: Any) -> dict[str, Any]:
    return _stage(
        evaluate.main,
        tmp_path,
        "evaluate",
        {
            "student": "tiny",
            "task": task,
            "maxNewTokens": 12,
            "batchSize": 8,
            "outputDir": str(tmp_path),
            **over,
        },
    )


def test_lora_sft_lowers_the_loss_and_raises_accuracy(tmp_path):
    config = _train_config(tmp_path, maxSteps=60)
    trained = _stage(train.main, tmp_path, "train", config)
    loss = trained["trainLoss"]
    assert loss["last"] < 0.5 * loss["first"], loss
    result = _evaluate(tmp_path, config["task"], adapterPath=trained["adapterPath"], baseline=True)
    assert result["baseline"]["correct"] == 0  # the random model knows none of the facts
    assert result["correct"] > result["baseline"]["correct"] + 4, result  # most of the 8 learned
    rows = [json.loads(line) for line in Path(result["predictionsPath"]).read_text().splitlines()]
    assert all(r["text"].startswith("The answer is ") for r in rows if r["correct"])


def test_grpo_from_a_half_trained_student_earns_verifier_rewards_and_learns_from_them(tmp_path):
    # A short SFT run leaves a student that is right on some facts and wrong on others: the spread of
    # rewards GRPO needs. Its merged weights are GRPO's base model.
    sft = _stage(train.main, tmp_path, "sft", _train_config(tmp_path, maxSteps=30, merge=True))
    config = _train_config(
        tmp_path,
        algorithm="grpo",
        modelUri=sft["mergedPath"],
        maxSteps=16,
        learningRate=2e-3,
        outputDir=str(tmp_path / "grpo"),
        grpo={"numGenerations": 8, "maxCompletionLength": 12, "temperature": 0.3},
    )
    grpo = _stage(train.main, tmp_path, "grpo", config)
    assert grpo["reward"]["first"] > 0  # the verifier's reward reached the trainer
    adapter = Path(grpo["adapterPath"])
    assert json.loads((adapter / "stratos.json").read_text())["baseModelUri"] == sft["mergedPath"]
    result = _evaluate(tmp_path, config["task"], adapterPath=str(adapter), baseline=True)
    assert result["correct"] >= result["baseline"]["correct"], result
