"""The real teacher_eval program, run as a subprocess against two fake teachers, then the selectors.

Teacher "cheap" answers 30% of the Mahjong probe sample correctly at $1/M tokens, "strong" 90% at
$5/M. With sampleSize 20 that is exactly 6/20 and 18/20; the expected token counts are recomputed
here from the task's prompts and the fake's answers, independently of the program.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stratos.api.spec import TaskSpec
from stratos.contracts.runs import RunStatus
from stratos.decide.strategy import select_strategy
from stratos.decide.teachers import select_teacher
from stratos.pipeline.stage_teachers import teacher_eval
from stratos.tasks import build_task, sample_for_probe
from support.fake_openai import FakeOpenAI, count_tokens, default_render, default_wrong_answer, prompt_tokens

# Smaller generated splits than the defaults (4260/100) keep each subprocess quick.
TASK = {"builtin": "mahjong", "sampleSize": 20, "seed": 0, "trainSize": 300, "testSize": 20}
KEYS = {"cheap": "sk-cheap-0a1b2c3d4e5f", "strong": "sk-strong-9f8e7d6c5b4a"}
PRICES = {"cheap": 1.0, "strong": 5.0}
FRACTIONS = {"cheap": 0.3, "strong": 0.9}


@pytest.fixture(scope="module")
def task_and_samples():
    task = build_task(TaskSpec.model_validate(TASK))
    samples = sample_for_probe(task, 20, 0)
    assert len(samples) == 20
    return task, samples


@pytest.fixture
def teachers(task_and_samples):
    _, samples = task_and_samples
    fakes = {
        name: FakeOpenAI(
            samples=samples,
            model=f"{name}-model",
            correct_fraction=FRACTIONS[name],
            require_key=KEYS[name],
            delay=0.01,
        )
        for name in KEYS
    }
    for fake in fakes.values():
        fake.start()
    yield fakes
    for fake in fakes.values():
        fake.stop()


def config(tmp_path: Path, name: str, fake: FakeOpenAI, **extra) -> Path:
    cfg = {
        "teacher": name,
        "baseURL": fake.base_url,
        "model": fake.model,
        "apiKeyEnv": f"{name.upper()}_API_KEY",
        "costPerMillionTokens": PRICES[name],
        "maxConcurrency": 4,
        "task": TASK,
        "outputDir": str(tmp_path / "out"),
        "timeout": 30,
        "maxTokens": 512,
        "temperature": 0.0,
        "maxRetries": 2,
        "retryInitialDelay": 0.01,
        **extra,
    }
    path = tmp_path / f"{name}-config.json"
    path.write_text(json.dumps(cfg))
    return path


def run_eval(tmp_path: Path, name: str, fake: FakeOpenAI, *, key: str | None = None, **extra):
    cfg = config(tmp_path, name, fake, **extra)
    result = tmp_path / f"{name}-result.json"
    env = {**os.environ, f"{name.upper()}_API_KEY": key if key is not None else KEYS[name]}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stratos.workloads.teacher_eval",
            "--config",
            str(cfg),
            "--result",
            str(result),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    text = result.read_text()
    assert len(text.encode()) < 4096
    return proc, json.loads(text)


def expected_usage(task, samples, fake: FakeOpenAI) -> tuple[int, int]:
    prompt = sum(prompt_tokens(task.messages(s)) for s in samples)
    completion = sum(
        count_tokens(default_render(s, s.answer if s.id in fake.correct_ids else default_wrong_answer(s)))
        for s in samples
    )
    return prompt, completion


def test_teacher_eval_end_to_end_then_selection(tmp_path, teachers, task_and_samples):
    task, samples = task_and_samples
    results = {}
    for name, fake in teachers.items():
        proc, result = run_eval(tmp_path, name, fake)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results[name] = result
        # the key reached the endpoint, and only there
        assert {r.headers["authorization"] for r in fake.chat_requests} == {f"Bearer {KEYS[name]}"}
        assert KEYS[name] not in proc.stdout + proc.stderr
        assert fake.max_in_flight <= 4
        assert len(fake.chat_requests) == 20

        prompt, completion = expected_usage(task, samples, fake)
        assert result["promptTokens"] == prompt == fake.prompt_tokens
        assert result["completionTokens"] == completion == fake.completion_tokens
        assert result["costUsd"] == pytest.approx((prompt + completion) / 1e6 * PRICES[name])
        assert result["requests"] == 20 and result["resumed"] == 0 and result["rejected"] == 0

        # traces: one line per probe sample, with the fake's verdicts and the canonical answers
        traces_path = Path(result["tracesPath"])
        assert traces_path == (tmp_path / "out" / "teacher-eval" / name / "traces.jsonl").resolve()
        rows = [json.loads(line) for line in traces_path.read_text().splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(s.id for s in samples)
        by_id = {s.id: s for s in samples}
        for row in rows:
            assert row["correct"] is (row["id"] in fake.correct_ids)
            assert row["text"].startswith("Let me think step by step.")
            if row["correct"]:
                assert row["extracted"] == by_id[row["id"]].answer
            assert row["expected"] == by_id[row["id"]].answer

    cheap, strong = results["cheap"], results["strong"]
    assert (cheap["ok"], cheap["teacher"], cheap["samples"], cheap["correct"]) == (True, "cheap", 20, 6)
    assert cheap["accuracy"] == 0.3
    assert (strong["samples"], strong["correct"], strong["accuracy"]) == (20, 18, 0.9)

    # Resumption: with the traces present a second run asks nothing and reports the same numbers.
    fake = teachers["cheap"]
    before = len(fake.requests)
    proc, again = run_eval(tmp_path, "cheap", fake)
    assert proc.returncode == 0
    assert len(fake.requests) == before
    assert again["resumed"] == 20 and again["requests"] == 0
    assert {k: v for k, v in again.items() if k not in ("requests", "resumed")} == {
        k: v for k, v in cheap.items() if k not in ("requests", "resumed")
    }

    # The decisions on these measurements, by hand:
    evals = [
        teacher_eval(n, PRICES[n], RunStatus("Succeeded", result=results[n])) for n in ("cheap", "strong")
    ]
    # A = 0.5: only strong (90%) meets it, so it is chosen although dearer; 90% >= 50% -> alignment.
    choice = select_teacher(evals, min_accuracy=0.5)
    assert choice.selected == "strong"
    assert {c.name: c.verdict for c in choice.candidates}["cheap"] == "accuracy 30% below the required 50%"
    strategy = select_strategy(choice.accuracy, min_accuracy=0.5)
    assert (strategy.selected, strategy.algorithm) == ("alignment", "sft-lora")
    # A = 0.25: both meet it, the cheaper wins.
    assert select_teacher(evals, min_accuracy=0.25).selected == "cheap"
    # A = 0.95: nobody meets it -> the most accurate, and the task is outside its knowledge -> injection.
    choice = select_teacher(evals, min_accuracy=0.95)
    assert choice.selected == "strong"
    assert choice.reason.startswith("no teacher meets the required accuracy 95%")
    strategy = select_strategy(choice.accuracy, min_accuracy=0.95)
    assert (strategy.selected, strategy.algorithm) == ("injection", "sft-lora")


def test_partial_traces_resume_only_the_missing(tmp_path, teachers, task_and_samples):
    fake = teachers["strong"]
    proc, first = run_eval(tmp_path, "strong", fake)
    assert proc.returncode == 0 and first["correct"] == 18
    path = Path(first["tracesPath"])
    lines = path.read_text().splitlines(keepends=True)
    # keep 12 complete lines and a torn 13th, as a pod killed mid-write would leave them
    path.write_text("".join(lines[:12]) + lines[12][:25])
    fake.reset()
    proc, second = run_eval(tmp_path, "strong", fake)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(fake.chat_requests) == 8
    assert (second["resumed"], second["requests"]) == (12, 8)
    assert (second["correct"], second["accuracy"]) == (18, 0.9)
    assert (second["promptTokens"], second["completionTokens"]) == (
        first["promptTokens"],
        first["completionTokens"],
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 20 and len({r["id"] for r in rows}) == 20


def test_wrong_key_reports_unavailable_without_leaking(tmp_path, teachers):
    fake = teachers["cheap"]
    wrong = "sk-wrong-key-5566778899"
    proc, result = run_eval(tmp_path, "cheap", fake, key=wrong)
    assert proc.returncode == 1
    assert result["ok"] is False and result["kind"] == "TeacherUnavailable"
    assert "authentication failed" in result["error"]
    assert wrong not in proc.stdout + proc.stderr + json.dumps(result)
    assert len(fake.chat_requests) <= 4  # the concurrent first wave at most, then fail fast
    failed = teacher_eval("cheap", 1.0, RunStatus("Failed", result=result, message=result["error"]))
    assert failed.error is not None and failed.error.startswith("TeacherUnavailable: ")


def test_transient_errors_are_retried_by_the_program(tmp_path, task_and_samples):
    _, samples = task_and_samples
    with FakeOpenAI(samples=samples, model="m", correct_fraction=0.5, fail_first=3, fail_status=503) as fake:
        proc, result = run_eval(
            tmp_path, "cheap", fake, model="m", apiKeyEnv=None, maxConcurrency=1, maxRetries=3
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (result["correct"], result["samples"]) == (10, 20)
    assert len(fake.chat_requests) == 23
    assert "retrying" in proc.stdout


def test_bad_config_is_reported(tmp_path, teachers):
    fake = teachers["cheap"]
    proc, result = run_eval(tmp_path, "cheap", fake, task={"builtin": "nope"})
    assert proc.returncode == 1
    assert result["ok"] is False and result["kind"] == "ConfigError"
    assert "builtin" in result["error"]


def test_reasoning_model_dialect(tmp_path, task_and_samples):
    """A DeepSeek-R1-like endpoint: reasoning in its own field, max_tokens/temperature refused."""
    _, samples = task_and_samples
    with FakeOpenAI(
        samples=samples,
        model="r1",
        correct_fraction=0.25,
        reasoning_field="reasoning_content",
        unsupported_params={"max_tokens", "temperature"},
    ) as fake:
        proc, result = run_eval(tmp_path, "cheap", fake, model="r1", apiKeyEnv=None, maxConcurrency=1)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (result["correct"], result["samples"], result["rejected"]) == (5, 20, 0)
    rows = [json.loads(line) for line in Path(result["tracesPath"]).read_text().splitlines()]
    assert all(r["reasoning"].startswith("Let me think step by step.") for r in rows)
    assert all(r["text"].startswith("The answer is") for r in rows)
