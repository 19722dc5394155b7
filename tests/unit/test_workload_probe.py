"""The student-probe stage: teacher reasoning in the prompt, teacher-eval's samples, measured speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from stratos.contracts.stage_io import ConfigError
from stratos.contracts.student_probe import StudentProbeConfig
from stratos.contracts.teacher_eval import TeacherEvalConfig
from stratos.tasks import build_task
from stratos.workloads import student_probe
from stratos.workloads.student_probe import load_reasoning
from stratos.workloads.teacher_eval import probe_samples
from support.tiny_models import one_thread, subprocess_env, tiny_model

TASK = {"builtin": "mahjong", "trainSize": 40, "testSize": 5, "seed": 0}


def _write_traces(path: Path, sample_size: int) -> dict[str, dict]:
    """Traces as teacher-eval writes them: a correct one, a wrong one, a failed request, a torn line."""
    task = build_task(TASK)
    samples = probe_samples(
        TeacherEvalConfig(
            teacher="t",
            baseURL="http://x",
            model="m",
            task=TASK,
            sampleSize=sample_size,
            seed=1,
            outputDir="unused",
        )
    )[1]
    rows = {
        samples[0].id: {"correct": True, "text": task.explain(samples[0])},  # type: ignore[attr-defined]
        samples[1].id: {"correct": False, "text": "Step 1: guess.\nThe answer is 🀇."},
        samples[2].id: {"correct": False, "text": "", "error": "HTTP 400: refused"},
        samples[3].id: {"correct": True, "text": "Group the tiles.\nThe answer is 🀙."},
        "mahjong-0-train-99999": {"correct": True, "text": "a sample outside this probe"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for sample_id, row in rows.items():
            line = {
                "id": sample_id,
                "question": "...",
                "expected": "...",
                "extracted": None,
                "promptTokens": 10,
                "completionTokens": 20,
                **row,
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
        fh.write('{"id": "torn", "text": "cut off mid-wri')
    return rows


def test_load_reasoning_skips_failed_requests_and_torn_lines(tmp_path):
    rows = _write_traces(tmp_path / "traces.jsonl", 6)
    every = load_reasoning(tmp_path / "traces.jsonl", correct_only=False)
    assert set(every) == {k for k, r in rows.items() if r["text"]}
    correct = load_reasoning(tmp_path / "traces.jsonl", correct_only=True)
    assert set(correct) == {k for k, r in rows.items() if r["correct"]}
    with pytest.raises(ConfigError, match="run teacher-eval first"):
        load_reasoning(tmp_path / "missing.jsonl", correct_only=False)


def test_probe_runs_as_a_stage_process_on_teacher_evals_samples_with_their_reasoning(tmp_path):
    traces = tmp_path / "teacher-eval" / "t" / "traces.jsonl"
    _write_traces(traces, 6)
    config = {
        "student": "tiny",
        "modelUri": str(tiny_model()),
        "task": TASK,
        "sampleSize": 6,
        "seed": 1,
        "tracesPath": str(traces),
        "maxNewTokens": 8,
        "batchSize": 4,
        "outputDir": str(tmp_path),
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stratos.workloads.student_probe",
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
    assert result["ok"] is True and result["student"] == "tiny"
    assert result["samples"] == 6 and result["withReasoning"] == 3  # the failed request has no reasoning
    assert result["accuracy"] == result["correct"] / 6
    assert result["tokensPerSecond"] > 0 and 6 <= result["generatedTokens"] <= 48
    answers = [json.loads(line) for line in Path(result["answersPath"]).read_text().splitlines()]
    expected_ids = [
        s.id
        for s in probe_samples(
            TeacherEvalConfig(
                teacher="t", baseURL="http://x", model="m", task=TASK, sampleSize=6, seed=1, outputDir="x"
            )
        )[1]
    ]
    assert [a["id"] for a in answers] == expected_ids
    assert [a["withReasoning"] for a in answers] == [True, True, False, True, False, False]
    assert "6 probe samples, 3 with the teacher's reasoning" in proc.stdout


def test_probe_prompts_carry_the_reasoning_without_its_answer(tmp_path, monkeypatch):
    _write_traces(tmp_path / "traces.jsonl", 6)
    seen = []

    def fake_generate(model, tokenizer, prompts, **kwargs):
        from stratos.training.generation import Generation, GenerationStats

        seen.extend(prompts)
        return [Generation("The answer is 🀇.", 5) for _ in prompts], GenerationStats(len(prompts), 30, 1.0)

    monkeypatch.setattr("stratos.training.generation.generate", fake_generate)
    config = StudentProbeConfig(
        student="tiny",
        modelUri=str(tiny_model()),
        task=TASK,
        sampleSize=6,
        seed=1,
        tracesPath=str(tmp_path / "traces.jsonl"),
        correctTracesOnly=True,
        outputDir=str(tmp_path),
    )
    with one_thread():
        result = student_probe.probe(config)
    assert result["withReasoning"] == 2 and result["tokensPerSecond"] == 30.0
    user = [p[-1]["content"] for p in seen]
    assert "<reasoning>" in user[0] and "Step 1: Sort the 13 tiles" in user[0]
    assert "<reasoning>" not in user[1]  # the teacher was wrong there and correctTracesOnly is on
    assert "<reasoning>\nGroup the tiles.\n</reasoning>" in user[3]  # its answer line was cut


def test_probe_without_traces_measures_the_bare_student(tmp_path):
    config = StudentProbeConfig(
        student="tiny",
        modelUri=str(tiny_model()),
        task=TASK,
        sampleSize=3,
        maxNewTokens=4,
        outputDir=str(tmp_path),
    )
    with one_thread():
        result = student_probe.probe(config)
    assert result["samples"] == 3 and result["withReasoning"] == 0
    assert result["accuracy"] == result["correct"] / 3
