"""The train stage on tiny CPU models: every algorithm, resume, deadline, merge, refusals.

Each run is a few optimizer steps of a ~140k-parameter model on the toy task (support.tiny_models), so
these test the wiring (datasets, trl trainers, LoRA, checkpoints, the saved adapter and its metadata),
not learning; test_workload_train_learning.py checks that training actually teaches the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("trl")

from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from stratos.training.generation import generate
from stratos.workloads import train
from support.tiny_models import one_thread, tiny_model, write_sft_dataset, write_toy_task


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("toy")
    task = write_toy_task(root)
    return {"task": task, "dataset": str(write_sft_dataset(root, task))}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out


def run_train(tmp_path: Path, toy: dict[str, Any], **over: Any) -> tuple[int, dict[str, Any]]:
    config = _merge(
        {
            "algorithm": "sft-lora",
            "student": "tiny",
            "modelUri": str(tiny_model()),
            "datasetPath": toy["dataset"],
            "outputDir": str(tmp_path / "out"),
            "task": toy["task"],
            "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
            "learningRate": 5e-3,
            "microBatchSize": 4,
            "sequenceLength": 256,
            "gradientCheckpointing": False,
            "maxSteps": 3,
            "saveSteps": 100,
            "seed": 0,
            "grpo": {"numGenerations": 4, "maxCompletionLength": 12},
            "dpo": {"maxNewTokens": 12, "batchSize": 8},
            "kd": {"maxNewTokens": 12},
        },
        over,
    )
    cfg_path, result_path = tmp_path / "config.json", tmp_path / "result.json"
    cfg_path.write_text(json.dumps(config))
    code = train.main(["--config", str(cfg_path), "--result", str(result_path)])
    text = result_path.read_text()
    assert len(text.encode()) < 4096
    return code, json.loads(text)


def assert_adapter_generates(adapter: str, *, trained: bool = True) -> None:
    """The adapter loads onto its recorded base with PeftModel.from_pretrained and generates."""
    meta = json.loads((Path(adapter) / "stratos.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(meta["baseModelUri"])
    model = PeftModel.from_pretrained(base, adapter)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    out, _ = generate(
        model, tokenizer, [[{"role": "user", "content": "What is the colour of the cat?"}]], max_new_tokens=6
    )
    assert out[0].new_tokens >= 1
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b, "no LoRA weights in the adapter"
    if trained:  # LoRA's B starts at zero: a trained adapter has moved it
        assert any(float(p.abs().sum()) > 0 for p in lora_b)


def test_sft_lora_saves_a_loadable_adapter_with_its_base_model_recorded(tmp_path, toy):
    code, result = run_train(tmp_path, toy, gradientCheckpointing=True)
    assert code == 0 and result["ok"] is True
    assert result["algorithm"] == "sft-lora" and result["steps"] == 3 == result["totalSteps"]
    assert result["trainLoss"]["first"] > 0 and result["resumedFrom"] is None
    assert result["mergedPath"] is None and result["stoppedEarly"] is None and result["rows"] == 8
    adapter = Path(result["adapterPath"])
    meta = json.loads((adapter / "stratos.json").read_text())
    assert meta["baseModelUri"] == str(tiny_model())
    assert meta["algorithm"] == "sft-lora" and meta["steps"] == 3
    config = json.loads((adapter / "adapter_config.json").read_text())
    # All linear projections of the blocks carry LoRA (rank/alpha from the config), lm_head does not.
    targets = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    assert_adapter_generates(str(adapter))


def test_merge_writes_full_weights_that_load_without_peft(tmp_path, toy):
    code, result = run_train(tmp_path, toy, merge=True, maxSteps=2)
    assert code == 0 and result["mergedPath"] == str((tmp_path / "out" / "merged").resolve())
    merged = AutoModelForCausalLM.from_pretrained(result["mergedPath"])
    tokenizer = AutoTokenizer.from_pretrained(result["mergedPath"])
    assert not any("lora" in n for n, _ in merged.named_parameters())
    out, _ = generate(merged, tokenizer, [[{"role": "user", "content": "hi"}]], max_new_tokens=3)
    assert out[0].new_tokens >= 1


def test_grpo_trains_with_the_task_verifier_as_reward(tmp_path, toy):
    code, result = run_train(tmp_path, toy, algorithm="grpo")
    assert code == 0 and result["algorithm"] == "grpo" and result["steps"] == 3
    assert result["reward"] is not None and 0.0 <= result["reward"]["last"] <= 1.0
    # An untrained model never earns a reward, so GRPO has no gradient yet: the adapter loads but is
    # still at its initial value (test_workload_train_learning shows GRPO learning from a better start).
    assert_adapter_generates(result["adapterPath"], trained=False)


def test_dpo_prefers_the_teacher_answer_over_the_students_own(tmp_path, toy):
    code, result = run_train(tmp_path, toy, algorithm="dpo")
    assert code == 0 and result["algorithm"] == "dpo" and result["steps"] == 3
    assert result["droppedRows"] == 0  # the untrained student gets nothing right
    assert result["trainLoss"]["first"] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference
    assert result["trainLoss"]["last"] < result["trainLoss"]["first"]
    assert_adapter_generates(result["adapterPath"])


@pytest.mark.parametrize("divergence, on_policy", [("forward-kl", 0.0), ("reverse-kl", 1.0)])
def test_white_box_kd_distils_a_same_vocabulary_teacher(tmp_path, toy, divergence, on_policy):
    teacher = tiny_model(seed=1, hidden_size=96)
    code, result = run_train(
        tmp_path,
        toy,
        algorithm="white-box-kd",
        teacherModelUri=str(teacher),
        kd={"divergence": divergence, "onPolicyFraction": on_policy},
    )
    assert code == 0 and result["algorithm"] == "white-box-kd" and result["steps"] == 3
    assert result["trainLoss"]["first"] > 0
    assert_adapter_generates(result["adapterPath"])


def test_white_box_kd_refuses_a_teacher_with_another_vocabulary(tmp_path, toy):
    teacher = tiny_model(seed=1, vocab_size=800)
    code, result = run_train(tmp_path, toy, algorithm="white-box-kd", teacherModelUri=str(teacher))
    assert code == 1 and result["ok"] is False and result["kind"] == "VocabularyMismatch"
    assert "share one vocabulary" in result["error"] and "1024 tokens" in result["error"]
    assert "800 tokens" in result["error"]
    assert not (tmp_path / "out" / "checkpoints").exists()  # refused before any training


@pytest.mark.parametrize(
    "over, message",
    [
        ({"algorithm": "white-box-kd"}, "needs teacherModelUri"),
        ({"algorithm": "grpo", "task": None}, "grpo needs task"),
        ({"algorithm": "ppo"}, "algorithm"),
    ],
)
def test_incomplete_configs_are_refused(tmp_path, toy, over, message):
    code, result = run_train(tmp_path, toy, **over)
    assert code == 1 and result["kind"] == "ConfigError" and message in result["error"]


def test_a_restarted_run_resumes_from_the_last_checkpoint_and_continues_the_step_count(tmp_path, toy):
    code, first = run_train(tmp_path, toy, maxSteps=3)
    assert code == 0 and first["steps"] == 3 and first["resumedFrom"] is None
    code, second = run_train(tmp_path, toy, maxSteps=6)
    assert code == 0
    assert second["resumedFrom"] == str((tmp_path / "out" / "checkpoints" / "checkpoint-3").resolve())
    assert second["steps"] == 6 and second["totalSteps"] == 6
    # The loss history continues the first run's: same first loss, a later last one.
    assert second["trainLoss"]["first"] == first["trainLoss"]["first"]
    state = json.loads((tmp_path / "out" / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]
    assert_adapter_generates(second["adapterPath"])


def test_max_seconds_stops_early_with_a_checkpoint_and_an_adapter(tmp_path, toy):
    code, result = run_train(tmp_path, toy, maxSteps=100000, maxSeconds=3, saveSteps=100000)
    assert code == 0 and result["ok"] is True and result["stoppedEarly"] == "deadline"
    assert 1 <= result["steps"] < result["totalSteps"] == 100000
    assert result["seconds"] < 10
    checkpoint = tmp_path / "out" / "checkpoints" / f"checkpoint-{result['steps']}"
    assert (checkpoint / "trainer_state.json").is_file()
    assert_adapter_generates(result["adapterPath"])


def test_a_pod_restarted_after_training_finished_does_not_train_again(tmp_path, toy):
    code, first = run_train(tmp_path, toy, maxSteps=3)
    assert code == 0
    # The adapter is lost (say the pod died before saving it); the final checkpoint is still there.
    shutil.rmtree(first["adapterPath"])
    code, again = run_train(tmp_path, toy, maxSteps=3, merge=True)
    assert code == 0 and again["steps"] == 3 and again["resumedFrom"].endswith("checkpoint-3")
    assert again["trainLoss"] == first["trainLoss"]
    assert not (tmp_path / "out" / "checkpoints" / "checkpoint-4").exists()
    assert_adapter_generates(again["adapterPath"])
    merged = AutoModelForCausalLM.from_pretrained(again["mergedPath"])
    assert not any("lora" in n for n, _ in merged.named_parameters())


@pytest.fixture(scope="module")
def mahjong(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("mahjong")
    task = {"builtin": "mahjong", "trainSize": 6, "testSize": 2, "seed": 0}
    return {"task": task, "dataset": str(write_sft_dataset(root, task, reasoning=True))}


def test_sft_on_mahjong_reasoning_traces(tmp_path, mahjong):
    code, result = run_train(tmp_path, mahjong, sequenceLength=1024, microBatchSize=2, maxSteps=2)
    assert code == 0 and result["steps"] == 2 and result["rows"] == 6
    assert_adapter_generates(result["adapterPath"])


def test_sequences_too_short_for_any_prompt_are_refused(tmp_path, mahjong):
    code, result = run_train(tmp_path, mahjong, sequenceLength=64)
    assert code == 1 and result["kind"] == "DatasetError"
    assert "sequenceLength" in result["error"]


def test_the_result_records_the_longest_target_in_the_students_tokens(tmp_path, toy):
    code, result = run_train(tmp_path, toy, maxSteps=1)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model()))
    rows = [json.loads(line) for line in Path(toy["dataset"]).read_text().splitlines() if line.strip()]
    targets = [r["messages"][-1]["content"] for r in rows]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in targets]
    assert code == 0 and result["longestTargetTokens"] == max(lengths) + 1  # and the end-of-turn token
    # A sequence length that cuts the completions: what was learnt is what fitted after the prompt.
    prompts = [
        tokenizer.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False)
        for r in rows
    ]
    prompt_lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    short = max(prompt_lengths) + 2  # the longest prompt leaves room for 2 tokens of its answer
    (tmp_path / "short").mkdir()
    code, cut = run_train(tmp_path / "short", toy, maxSteps=1, sequenceLength=short)
    room = [min(n + 1, short - p) for n, p in zip(lengths, prompt_lengths, strict=True)]
    assert code == 0 and cut["longestTargetTokens"] == max(room) < max(lengths) + 1
    assert result["baseModel"] is None  # a plain checkpoint: its URI says what it is
