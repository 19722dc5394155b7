"""A training pod that gets SIGTERM (preemption, node drain) checkpoints, and its successor resumes.

Runs the stage as a real process, the way the Job's container runs it, sends SIGTERM once training
has logged its first step, and checks the exit code (143), the Terminated result, the checkpoint, and that
a second run picks up from that checkpoint.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("trl")

from support.tiny_models import subprocess_env, tiny_model, write_sft_dataset, write_toy_task

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, max_steps: int) -> Path:
    task = write_toy_task(tmp_path / "toy")
    config = {
        "algorithm": "sft-lora",
        "modelUri": str(tiny_model()),
        "task": task,
        "datasetPath": str(write_sft_dataset(tmp_path / "toy", task)),
        "outputDir": str(tmp_path / "out"),
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "microBatchSize": 4,
        "sequenceLength": 256,
        "gradientCheckpointing": False,
        "maxSteps": max_steps,
        "saveSteps": 100000,
        "seed": 0,
    }
    path = tmp_path / f"config-{max_steps}.json"
    path.write_text(json.dumps(config))
    return path


def _run(config: Path, result: Path, *, stop_after_step: int | None = None) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stratos.workloads.train", "--config", str(config), "--result", str(result)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if stop_after_step is not None and f" step {stop_after_step}/" in line:
                proc.send_signal(signal.SIGTERM)
                stop_after_step = None
        return proc.wait(timeout=60), "".join(lines)
    finally:
        watchdog.cancel()


def test_sigterm_saves_a_checkpoint_and_the_next_pod_resumes_from_it(tmp_path):
    result = tmp_path / "result.json"
    code, log = _run(_config(tmp_path, 100000), result, stop_after_step=1)
    assert code == 143, log
    payload = json.loads(result.read_text())
    assert payload["ok"] is False and payload["kind"] == "Terminated"
    assert "checkpoint saved" in payload["error"]
    checkpoints = sorted((tmp_path / "out" / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").is_file(), log
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert stopped_at >= 1

    code, log = _run(_config(tmp_path, stopped_at + 2), result)
    assert code == 0, log
    payload = json.loads(result.read_text())
    assert payload["resumedFrom"] == str(checkpoints[0].resolve())
    assert payload["steps"] == stopped_at + 2
    assert f"resuming at step {stopped_at}" in log
