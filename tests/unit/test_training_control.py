"""Stopping in time, finding checkpoints, relaunching under torchrun: the pure parts."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("transformers")

from transformers import TrainerControl, TrainerState, TrainingArguments

from stratos.training import launch
from stratos.training.callbacks import StopAndSave, deadline_reached, save_reserve
from stratos.training.checkpoints import first_last, last_checkpoint


def test_deadline_is_reached_when_the_next_step_and_the_save_would_not_fit():
    assert not deadline_reached(100.0, None, 10.0, 5.0)
    assert not deadline_reached(100.0, 200.0, 10.0, 5.0)  # 100 + 15 + 5 < 200
    assert deadline_reached(180.0, 200.0, 10.0, 5.0)  # 180 + 15 + 5 >= 200
    assert deadline_reached(250.0, 200.0, 0.0, 0.0)


def test_save_reserve_scales_with_the_budget():
    assert save_reserve(5, merge=False) == 2.0
    assert save_reserve(100, merge=False) == 10.0
    assert save_reserve(7200, merge=False) == 30.0
    assert save_reserve(7200, merge=True) == 150.0
    assert save_reserve(100, merge=True) == 30.0


def _step(cb, state):
    control = TrainerControl()
    cb.on_step_end(TrainingArguments(output_dir="unused", report_to="none"), state, control)
    return control


def test_stop_and_save_saves_at_the_last_step_and_stops_on_request():
    cb = StopAndSave()
    state = TrainerState(max_steps=5, global_step=2)
    cb.on_train_begin(None, state, TrainerControl())  # type: ignore[arg-type]
    control = _step(cb, state)
    assert not control.should_save and not control.should_training_stop
    state.global_step = 5
    assert _step(cb, state).should_save
    cb.request_stop()
    state.global_step = 3
    control = _step(cb, state)
    assert control.should_save and control.should_training_stop and cb.stop_reason == "terminated"


def test_stop_and_save_stops_before_the_deadline():
    cb = StopAndSave(deadline=0.0, reserve=0.0)  # monotonic clock is far past 0
    state = TrainerState(max_steps=100, global_step=1)
    cb.on_train_begin(None, state, TrainerControl())  # type: ignore[arg-type]
    control = _step(cb, state)
    assert control.should_training_stop and control.should_save and cb.stop_reason == "deadline"


def test_last_checkpoint_skips_incomplete_ones(tmp_path):
    assert last_checkpoint(tmp_path / "none") is None
    for step in (5, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-10-tmp").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"  # 15 was cut off mid-save
    (tmp_path / "checkpoint-10" / "checkpoint-is-incomplete.txt").write_text("")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-5"


def test_first_last_of_logged_metrics():
    history = [
        {"loss": 3.0, "step": 1},
        {"reward": 0.5},
        {"loss": 2.0},
        {"train_runtime": 1.0},
        {"loss": 1.5},
    ]
    assert first_last(history, "loss") == {"first": 3.0, "last": 1.5}
    assert first_last(history, "reward") == {"first": 0.5, "last": 0.5}
    assert first_last(history, "kl") is None


def test_relaunch_only_with_several_gpus_outside_torchrun():
    assert not launch.should_relaunch(0, {})
    assert not launch.should_relaunch(1, {})
    assert launch.should_relaunch(4, {})
    assert not launch.should_relaunch(4, {"LOCAL_RANK": "0", "WORLD_SIZE": "4"})
    assert not launch.should_relaunch(4, {launch.NO_RELAUNCH_ENV: "1"})
    assert launch.rank({"RANK": "3"}) == 3 and launch.rank({}) == 0


def test_torchrun_command_reruns_the_same_stage_with_the_same_arguments():
    cmd = launch.torchrun_command("stratos.workloads.train", ["--config", "/etc/c.json", "--result", "/r"], 8)
    assert cmd == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=8",
        "-m",
        "stratos.workloads.train",
        "--config",
        "/etc/c.json",
        "--result",
        "/r",
    ]


def test_result_path_rewriting_for_non_zero_ranks():
    argv = ["--config", "c.json", "--result", "/dev/termination-log"]
    assert launch.result_path(argv) == "/dev/termination-log"
    assert launch.result_path(["--config", "c", "--result=/x"]) == "/x"
    assert launch.result_path(["--config", "c"]) == "/dev/termination-log"
    assert launch.with_result(argv, "/dev/null") == ["--config", "c.json", "--result", "/dev/null"]
    assert launch.with_result(["--result=/x", "--config", "c"], "/y") == ["--config", "c", "--result", "/y"]


def test_relaunch_reports_a_failed_torchrun_itself(tmp_path, monkeypatch):
    result = tmp_path / "result.json"
    monkeypatch.setattr(
        launch, "torchrun_command", lambda module, argv, nproc: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    assert launch.relaunch("stratos.workloads.train", ["--config", "c", "--result", str(result)], 2) == 3
    assert '"kind":"DistributedLaunchFailed"' in result.read_text()
    assert "exited with code 3" in result.read_text()


def test_relaunch_keeps_the_result_rank_zero_wrote(tmp_path, monkeypatch):
    result = tmp_path / "result.json"
    script = f'open({str(result)!r}, \'w\').write(\'{{"ok":false,"kind":"X"}}\'); raise SystemExit(1)'
    monkeypatch.setattr(
        launch, "torchrun_command", lambda module, argv, nproc: [sys.executable, "-c", script]
    )
    assert launch.relaunch("m", ["--result", str(result)], 2) == 1
    assert result.read_text() == '{"ok":false,"kind":"X"}'


def test_a_checkpoint_at_the_last_step_is_finished_and_its_adapter_can_be_copied(tmp_path):
    import json

    from stratos.training.checkpoints import copy_adapter, is_finished

    ckpt = tmp_path / "checkpoint-6"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 6, "max_steps": 6}))
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "training_args.bin",
    ):
        (ckpt / name).write_text(name)
    assert is_finished(ckpt, None) and is_finished(ckpt, 6) and is_finished(ckpt, 4)
    assert not is_finished(ckpt, 10)
    copied = copy_adapter(ckpt, tmp_path / "adapter")
    assert sorted(p.name for p in copied.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
    ]
