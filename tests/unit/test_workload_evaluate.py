"""The evaluate stage: held-out accuracy of base model + adapter, with the optional baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from stratos.contracts.evaluate import EvaluateConfig
from stratos.workloads import evaluate, train
from support.tiny_models import one_thread, subprocess_env, tiny_model, write_sft_dataset, write_toy_task


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A toy-task adapter after a short SFT run (in-process, to keep the test fast)."""
    root = tmp_path_factory.mktemp("evaluate")
    task = write_toy_task(root / "toy")
    config = {
        "algorithm": "sft-lora",
        "modelUri": str(tiny_model()),
        "task": task,
        "datasetPath": str(write_sft_dataset(root / "toy", task)),
        "outputDir": str(root / "train"),
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
        "learningRate": 1e-2,
        "microBatchSize": 8,
        "sequenceLength": 256,
        "gradientCheckpointing": False,
        "maxSteps": 40,
        "saveSteps": 1000,
    }
    (root / "train.json").write_text(json.dumps(config))
    with one_thread():
        code = train.main(["--config", str(root / "train.json"), "--result", str(root / "train-result.json")])
    assert code == 0
    return {"root": root, "task": task, **json.loads((root / "train-result.json").read_text())}


def test_evaluate_runs_as_a_stage_process_and_reports_accuracy_and_baseline(trained, tmp_path):
    config = {
        "student": "tiny",
        "adapterPath": trained["adapterPath"],
        "task": trained["task"],
        "maxNewTokens": 12,
        "batchSize": 4,
        "baseline": True,
        "outputDir": str(tmp_path),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stratos.workloads.evaluate",
            "--config",
            str(tmp_path / "config.json"),
            "--result",
            str(tmp_path / "result.json"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["ok"] is True and result["student"] == "tiny" and result["samples"] == 8
    assert result["accuracy"] == result["correct"] / 8
    assert result["baseline"] == {"accuracy": 0.0, "correct": 0}  # the untrained base knows nothing
    assert result["correct"] > 0 and result["tokensPerSecond"] > 0
    assert result["adapterPath"] == trained["adapterPath"]
    rows = [json.loads(line) for line in Path(result["predictionsPath"]).read_text().splitlines()]
    assert len(rows) == 8 and sum(r["correct"] for r in rows) == result["correct"]
    assert all(r["baselineCorrect"] is False for r in rows)
    assert {"id", "expected", "extracted", "text"} <= set(rows[0])


def test_evaluate_the_base_model_alone_and_a_capped_split(trained, tmp_path):
    config = EvaluateConfig(
        modelUri=str(tiny_model()),
        task=trained["task"],
        maxSamples=3,
        maxNewTokens=4,
        baseline=True,
        outputDir=str(tmp_path),
    )
    with one_thread():
        result = evaluate.evaluate(config)
    assert result["samples"] == 3 and result["baseline"] is None and result["adapterPath"] is None


def test_evaluate_reports_a_missing_model_as_a_failure(tmp_path):
    config = {"task": {"builtin": "mahjong", "trainSize": 10, "testSize": 2}, "outputDir": str(tmp_path)}
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert evaluate.main(["--config", str(tmp_path / "c.json"), "--result", str(tmp_path / "r.json")]) == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["kind"] == "ConfigError" and "modelUri, adapterPath, or both" in result["error"]
    config["adapterPath"] = str(tmp_path / "no-adapter")
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert evaluate.main(["--config", str(tmp_path / "c.json"), "--result", str(tmp_path / "r.json")]) == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["kind"] == "ModelUnavailable" and "no-adapter" in result["error"]
