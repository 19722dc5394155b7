"""The README's first command, reduced in size: `stratos run` of the local example, end to end.

Programmatic teacher, tiny random students, every stage as a local process, served with
`transformers serve`; the outputs (status, summary, the endpoint's answer) are checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mahjong-local.yaml"


def reduced_example(tmp_path: Path) -> Path:
    job = yaml.safe_load(EXAMPLE.read_text())
    job["spec"]["task"].update(sampleSize=4, trainSize=24, testSize=4)
    job["spec"]["distillation"].update(targetSamples=32, epochs=1)
    job["spec"]["teachers"][0]["endpoint"]["baseURL"] = "http://127.0.0.1:18732/v1"  # not the README's port
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_local_run_distils_evaluates_and_serves(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    cmd = [
        sys.executable, "-m", "stratos.cli", "run", str(reduced_example(tmp_path)),
        "--programmatic-teacher", "--tiny-students", "--workdir", str(workdir),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=None)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "PROGRAMMATIC Mahjong teacher" in out and "RANDOM-INITIALISED" in out  # labelled as such

    status = json.loads((workdir / "status.json").read_text())
    assert status["phase"] == "Serving"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    for ctype in (
        "ServerSelected",
        "TeacherSelected",
        "StudentSelected",
        "DataReady",
        "Trained",
        "Evaluated",
        "Ready",
    ):
        assert conditions[ctype] == "True", (ctype, status)
    assert status["strategy"]["selected"] == "injection"
    assert status["data"]["samples"] == 32 and status["data"]["synthetic"] == 32 - 24
    assert status["evaluation"]["samples"] == 4
    assert status["endpoint"]["tokensPerSecond"] > 0
    assert "held-out samples; teacher programmatic" in out  # the student's accuracy beside the teacher's
    assert "Asked the endpoint" in out and "reply:" in out

    # A second run resumes: no stage runs again, the same decisions are reported.
    results = {p: p.stat().st_mtime_ns for p in (workdir / "runs").glob("*/result.json")}
    assert len(results) == 6  # teacher-eval, two probes, synthesize, train, evaluate
    again = subprocess.run([*cmd, "-o", "json"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stderr
    assert json.loads(again.stdout)["student"] == status["student"]
    assert {p: p.stat().st_mtime_ns for p in (workdir / "runs").glob("*/result.json")} == results
