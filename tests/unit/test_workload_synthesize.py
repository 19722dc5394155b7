"""The real synthesize program, run as a subprocess against fake teachers.

Injection on Mahjong: the fake writes reverse reasoning ending in the right answer for a known set of
questions (real and synthetic) and in a wrong tile otherwise. The synthetic candidates are recomputed
here from the same seeds (`stratos.synthesis.sources`), and the expected counts by walking them the
way the scheduler's rule says (the shortest prefix of candidates that fills the target).

Alignment on the GSM8K sample: the fake solves 12 of the 18 training questions at once, 3 more on
their second trace, and never the last 3; synthetic questions are written by the teacher and checked
by a second, separate verifier endpoint that disagrees on a known subset.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stratos.api.spec import TaskSpec
from stratos.data.sources import BUILTIN_DIR
from stratos.synthesis.engine import request_seed
from stratos.synthesis.prompts import NEW_QUESTION_INSTRUCTION, question_key
from stratos.synthesis.sources import mutate_candidate, select_real, synthetic_id
from stratos.tasks import build_task
from stratos.tasks.mahjong_solver import winning_tiles
from stratos.tasks.mahjong_tiles import canonical_answer, parse_tiles
from support.fake_openai import FakeOpenAI, choose_correct, default_render

MAHJONG = {"builtin": "mahjong", "seed": 0, "trainSize": 60, "testSize": 20}
# The API admits file:// URIs (builtin:// is the task plug-in's own shorthand).
GSM8K = {"builtin": "gsm8k", "seed": 0, "dataset": {"train": f"file://{BUILTIN_DIR / 'gsm8k-sample.jsonl'}"}}
KEY = "sk-synth-0a1b2c3d4e5f"
VERIFIER_KEY = "sk-verify-9f8e7d6c5b4a"


def write_config(tmp_path: Path, fake: FakeOpenAI, **extra: Any) -> Path:
    cfg = {
        "strategy": "injection",
        "teacher": {
            "name": "teacher",
            "baseURL": fake.base_url,
            "model": fake.model,
            "apiKeyEnv": "TEACHER_API_KEY",
            "costPerMillionTokens": 2.0,
            "maxConcurrency": 4,
            "timeout": 30,
            "maxRetries": 1,
            "retryInitialDelay": 0.01,
        },
        "task": MAHJONG,
        "outputDir": str(tmp_path / "out"),
        **extra,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def run(tmp_path: Path, fake: FakeOpenAI, **extra: Any) -> tuple[subprocess.CompletedProcess[str], dict]:
    cfg = write_config(tmp_path, fake, **extra)
    result = tmp_path / "result.json"
    env = {**os.environ, "TEACHER_API_KEY": KEY, "VERIFIER_API_KEY": VERIFIER_KEY}
    proc = subprocess.run(
        [sys.executable, "-m", "stratos.workloads.synthesize", "--config", str(cfg), "--result", str(result)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    text = result.read_text()
    assert len(text.encode()) < 4096
    return proc, json.loads(text)


def rows_of(result: dict) -> list[dict]:
    return [json.loads(line) for line in Path(result["datasetPath"]).read_text().splitlines()]


def check_trl_shape(rows: list[dict], path: str) -> None:
    """Every line is a conversational example trl's SFTTrainer takes as it is."""
    datasets = pytest.importorskip("datasets")
    from trl.data_utils import is_conversational

    ds = datasets.load_dataset("json", data_files=path, split="train")
    assert len(ds) == len(rows)
    assert set(ds.column_names) == {"id", "messages", "answer", "source"}
    for example in ds:
        assert is_conversational(example)
        roles = [m["role"] for m in example["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert example["messages"][-1]["content"].endswith(f"The answer is {example['answer']}.")
        assert example["source"] in ("real", "synthetic")


# ------------------------------------------------------------------------------------ injection


def expected_injection(task, real, correct, target):
    """Walk the candidates as the program must: (kept real, synthetic ids kept, mismatches, dups)."""
    kept_real = [s for s in real if s.id in correct]
    need = target - len(kept_real)
    seen = {question_key(s) for s in (*task.load("train"), *task.load("test"))}
    kept, mismatched, duplicates, index = [], [], 0, 0
    while len(kept) < need:
        cand = mutate_candidate(task, real, seed=0, index=index)
        index += 1
        key = question_key(cand)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        (kept if cand.id in correct else mismatched).append(cand.id)
    return kept_real, kept, mismatched, duplicates


def test_injection_on_mahjong_then_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=20, seed=0)
    candidates = [mutate_candidate(task, real, seed=0, index=i) for i in range(80)]
    correct = choose_correct([s.id for s in real], 0.75) | choose_correct(
        [c.id for c in candidates], 0.75, salt="synthetic"
    )
    target = 32
    kept_real, kept_synth, mismatched, duplicates = expected_injection(task, real, correct, target)
    assert len(kept_real) == 15

    with FakeOpenAI(
        samples=[*real, *candidates],
        model="weak",
        correct_ids=correct,
        reverse_correct=False,
        require_key=KEY,
        delay=0.005,
    ) as fake:
        knobs = {"maxRealSamples": 20, "targetSamples": target, "attempts": 1, "temperature": 0.0}
        proc, result = run(tmp_path, fake, **knobs)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert KEY not in proc.stdout + proc.stderr
        assert fake.max_in_flight <= 4
        asked = len(fake.chat_requests)

        # every request was a reverse-reasoning prompt: question and its known answer
        for r in fake.chat_requests:
            user = r.body["messages"][-1]["content"]
            assert "The correct answer is: " in user and "Write the step-by-step reasoning" in user
        assert asked == 20 + len(kept_synth) + len(mismatched)

        assert result["ok"] is True
        assert (result["strategy"], result["augment"], result["target"]) == ("injection", "mutate", 32)
        assert (result["kept"], result["real"], result["synthetic"]) == (32, 15, 17)
        rejected = {"answer mismatch": 5 + len(mismatched)}
        if duplicates:
            rejected["duplicate"] = duplicates
        assert result["rejected"] == rejected
        assert result["rejectedTotal"] == sum(rejected.values())
        assert result["requests"] == asked and result["resumed"] == 0
        assert result["promptTokens"] == fake.prompt_tokens
        assert result["completionTokens"] == fake.completion_tokens
        assert result["costUsd"] == pytest.approx((fake.prompt_tokens + fake.completion_tokens) * 2.0 / 1e6)
        assert "synthesize: 32/32 kept (15 real, 17 synthetic)" in proc.stdout

        rows = rows_of(result)
        assert sorted(r["id"] for r in rows) == sorted([s.id for s in kept_real] + kept_synth)
        for row in rows:
            user = row["messages"][1]["content"]
            hand = parse_tiles(user.split("\n", 1)[0])
            assert len(hand) == 13
            # the kept answer is the solver's, and the reasoning ends in it
            assert row["answer"] == canonical_answer(winning_tiles(hand))
            assert row["messages"][2]["content"].startswith("Let me think step by step.")
            sample = next(s for s in [*real, *candidates] if s.id == row["id"])
            assert user == task.messages(sample)[1]["content"]
        assert {r["source"] for r in rows if r["id"].startswith("synthetic-")} == {"synthetic"}
        check_trl_shape(rows, result["datasetPath"])

        # Resumption: nothing new to ask, the same totals.
        fake.reset()
        proc, again = run(tmp_path, fake, **knobs)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert fake.chat_requests == []
        assert again["requests"] == 0 and again["resumed"] == asked + duplicates
        same = ("kept", "real", "synthetic", "rejected", "promptTokens", "completionTokens", "costUsd")
        assert {k: again[k] for k in same} == {k: result[k] for k in same}

        # A pod killed part-way: the first 10 decisions and a torn line survive; the rest is redone.
        state = tmp_path / "out" / "synthesize" / "state.jsonl"
        entries = state.read_text().splitlines(keepends=True)
        state.write_text("".join(entries[:11]) + entries[11][:20])
        kept_ids = {json.loads(e)["id"] for e in entries[1:11] if json.loads(e)["kept"]}
        data = Path(result["datasetPath"])
        data.write_text(
            "".join(
                line + "\n" for line in data.read_text().splitlines() if json.loads(line)["id"] in kept_ids
            )
        )
        fake.reset()
        proc, third = run(tmp_path, fake, **knobs)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        redone = sum(1 for e in map(json.loads, entries[11:]) if e.get("reason") != "duplicate")
        assert len(fake.chat_requests) == third["requests"] == redone
        counts = ("kept", "real", "synthetic", "rejected")
        assert {k: third[k] for k in counts} == {k: result[k] for k in counts}
        # The redone requests are paid again: the spend ledger counts every response, every run.
        assert third["promptTokens"] == result["promptTokens"] + fake.prompt_tokens
        assert third["completionTokens"] == result["completionTokens"] + fake.completion_tokens
        again_usd = (fake.prompt_tokens + fake.completion_tokens) * 2.0 / 1e6
        assert third["costUsd"] == pytest.approx(result["costUsd"] + again_usd)
        assert sorted(r["id"] for r in rows_of(third)) == sorted(r["id"] for r in rows)


# ------------------------------------------------------------------------------------ alignment


class MathTeacher:
    """The fake's reply hook: writes new GSM8K-style questions, and answers them as a verifier."""

    def __init__(self, samples, second_try: set[str]) -> None:
        self.samples = samples
        self.second_try = second_try
        self.asked: dict[str, int] = {}
        self.lock = threading.Lock()

    @staticmethod
    def numbers(seed: int) -> tuple[int, int]:
        rng = random.Random(seed)
        return rng.randrange(2, 30), rng.randrange(2, 30)

    @staticmethod
    def outcome(a: int, b: int) -> str:
        """What happens to the question written from (a, b): kept, malformed, or the verifier disagrees."""
        if (a + b) % 7 == 0:
            return "malformed"
        if (a * b) % 5 == 0:
            return "disagree"
        return "ok"

    @staticmethod
    def question(a: int, b: int) -> str:
        return f"Ann picks {a} plums and Bo picks {b} plums. How many plums do they pick together?"

    def generator(self, messages: list[dict], body: dict) -> str | None:
        user = messages[-1]["content"]
        if NEW_QUESTION_INSTRUCTION in user:
            a, b = self.numbers(body["seed"])
            if self.outcome(a, b) == "malformed":
                return "Here is a fun one about plums!"
            return f"Question: {self.question(a, b)}\nSolution: {a} + {b} = {a + b}.\nThe answer is {a + b}"
        for s in self.samples:  # a real question wanted on its second trace only
            if s.id in self.second_try and s.question in user:
                with self.lock:
                    self.asked[s.id] = self.asked.get(s.id, 0) + 1
                    if self.asked[s.id] >= 2:
                        return default_render(s, s.answer)
        return None

    def verifier(self, messages: list[dict], body: dict) -> str | None:
        m = re.search(r"Ann picks (\d+) plums and Bo picks (\d+)", messages[-1]["content"])
        assert m, "the verifier is asked only about written questions"
        a, b = int(m.group(1)), int(m.group(2))
        total = a + b if self.outcome(a, b) == "ok" else a + b + 1
        return f"Adding the plums: {a} + {b}.\nThe answer is {total}"


def expected_alignment(need: int) -> tuple[int, dict[str, int], int]:
    """(candidates tried, rejections by reason, verifier calls) for the written synthetic questions."""
    kept, rejected, verifier_calls, seen, index = 0, {}, 0, set(), 0
    while kept < need:
        a, b = MathTeacher.numbers(request_seed(0, synthetic_id(index), "write", 0))
        index += 1
        outcome = MathTeacher.outcome(a, b)
        if outcome == "malformed":
            rejected["malformed reply"] = rejected.get("malformed reply", 0) + 1
            continue
        if (a, b) in seen:
            rejected["duplicate"] = rejected.get("duplicate", 0) + 1
            continue
        seen.add((a, b))
        verifier_calls += 1
        if outcome == "disagree":
            rejected["verifier disagrees"] = rejected.get("verifier disagrees", 0) + 1
        else:
            kept += 1
    return index, rejected, verifier_calls


def test_alignment_on_gsm8k_with_teacher_written_questions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    task = build_task(TaskSpec.model_validate(GSM8K))
    train = task.load("train")
    assert len(train) == 18
    ids = [s.id for s in train]
    first_try = choose_correct(ids, 12 / 18)
    second_try = set(sorted(set(ids) - first_try)[:3])
    hook = MathTeacher(train, second_try)
    target = 24
    tried, synth_rejected, verifier_calls = expected_alignment(target - 15)

    with (
        FakeOpenAI(
            samples=train, model="strong", correct_ids=first_try, require_key=KEY, reply=hook.generator
        ) as fake,
        FakeOpenAI(model="judge", require_key=VERIFIER_KEY, reply=hook.verifier) as judge,
    ):
        verifier = {
            "name": "judge",
            "baseURL": judge.base_url,
            "model": "judge",
            "apiKeyEnv": "VERIFIER_API_KEY",
            "costPerMillionTokens": 10.0,
            "maxConcurrency": 2,
        }
        extra = {
            "strategy": "alignment",
            "task": GSM8K,
            "targetSamples": target,
            "attempts": 2,
            "verifierTeacher": verifier,
        }
        proc, result = run(tmp_path, fake, **extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert VERIFIER_KEY not in proc.stdout + proc.stderr

        # rejection sampling on the real questions: 12 at once, 3 on the second trace, 3 never
        forward = [
            r for r in fake.chat_requests if NEW_QUESTION_INSTRUCTION not in r.body["messages"][-1]["content"]
        ]
        assert len(forward) == 12 + 2 * 3 + 2 * 3
        assert (result["real"], result["synthetic"], result["kept"]) == (15, target - 15, target)
        assert result["rejected"] == {"answer mismatch": 3, **synth_rejected}
        written = [r for r in fake.chat_requests if r not in forward]
        assert len(written) == tried
        assert len(judge.chat_requests) == verifier_calls
        assert result["requests"] == len(fake.chat_requests) + len(judge.chat_requests)
        # the verifier is a fresh request (no assistant turn), greedy, with its own seed
        for r in judge.chat_requests:
            assert [m["role"] for m in r.body["messages"]] == ["system", "user"]
            assert r.body["temperature"] == 0.0
        assert {r.body["seed"] for r in judge.chat_requests}.isdisjoint({r.body["seed"] for r in written})
        cost = (fake.prompt_tokens + fake.completion_tokens) * 2.0
        cost += (judge.prompt_tokens + judge.completion_tokens) * 10.0
        assert result["costUsd"] == pytest.approx(cost / 1e6)

        rows = rows_of(result)
        real_rows = [r for r in rows if r["source"] == "real"]
        assert {r["id"] for r in real_rows} == first_try | second_try
        by_id = {s.id: s for s in train}
        for row in real_rows:
            assert row["answer"] == by_id[row["id"]].answer
            assert row["messages"][1]["content"] == task.messages(by_id[row["id"]])[1]["content"]
        for row in rows:
            if row["source"] == "synthetic":
                a, b = map(int, re.findall(r"\d+", row["messages"][1]["content"])[:2])
                assert row["answer"] == str(a + b)
                assert row["messages"][2]["content"] == f"{a} + {b} = {a + b}.\n\nThe answer is {a + b}."
        check_trl_shape(rows, result["datasetPath"])

        fake.reset()
        judge.reset()
        proc, again = run(tmp_path, fake, **extra)
        assert proc.returncode == 0
        assert fake.chat_requests == [] and judge.chat_requests == [] and again["requests"] == 0
        same = ("kept", "real", "synthetic", "rejected", "promptTokens", "completionTokens", "costUsd")
        assert {k: again[k] for k in same} == {k: result[k] for k in same}


def test_no_surviving_example_is_a_failure(tmp_path):
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=5, seed=0)
    with FakeOpenAI(samples=real, model="weak", correct_ids=(), reverse_correct=False) as fake:
        proc, result = run(tmp_path, fake, maxRealSamples=5, targetSamples=5, attempts=2, augment="none")
    assert proc.returncode == 1
    # The failure still says what the ten requests cost (the state ledger's items, all decided).
    entries = [
        json.loads(line) for line in (tmp_path / "out/synthesize/state.jsonl").read_text().splitlines()
    ]
    spent = {
        k: sum(e.get(k, 0) for e in entries[1:]) for k in ("promptTokens", "completionTokens", "costUSD")
    }
    assert spent["costUSD"] > 0
    assert result == {
        "ok": False,
        "error": "no example survived verification (answer mismatch 5)",
        "kind": "NoTrainingData",
        "costUsd": pytest.approx(spent["costUSD"]),
        "promptTokens": spent["promptTokens"],
        "completionTokens": spent["completionTokens"],
    }
    assert len(fake.chat_requests) == 10


def test_bad_config_is_reported(tmp_path):
    with FakeOpenAI(model="m") as fake:
        proc, result = run(tmp_path, fake, strategy="sideways")
    assert proc.returncode == 1 and result["kind"] == "ConfigError" and "strategy" in result["error"]


def test_the_budget_caps_synthesis_inside_the_workload_and_keeps_what_was_written(tmp_path):
    """Issue 15, defect 10: the workload never spends past its budget, counting the requests in flight.
    Each request reserves its worst case (prompt bytes + maxTokens 2048 at 2 USD per million tokens,
    about 0.005 USD) before it is sent; at 0.008 USD only one fits at a time, and synthesis stops when the
    next one would not fit with none in flight, keeping what was written."""
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=40, seed=0)
    budget = 0.008
    with FakeOpenAI(samples=real, model="m", correct_ids={s.id for s in real}) as fake:
        proc, result = run(tmp_path, fake, targetSamples=40, augment="none", budgetUsd=budget)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert result["stoppedEarly"] == "budget" and 0 < result["costUsd"] <= budget
    assert 1 <= result["kept"] < 40 and len(rows_of(result)) == result["kept"]
    assert result["requests"] == len(fake.chat_requests)  # every request sent was answered and counted
    assert result["testSamples"] == 20  # MAHJONG's testSize: what the evaluation will answer
    # A later run of the stage (a retried pod) starts from what the first one spent and stays within it.
    with FakeOpenAI(samples=real, model="m", correct_ids={s.id for s in real}) as again:
        proc, second = run(tmp_path, again, targetSamples=40, augment="none", budgetUsd=budget)
    assert proc.returncode == 0 and second["stoppedEarly"] == "budget" and second["costUsd"] <= budget
    assert second["kept"] >= result["kept"] and len(rows_of(second)) == second["kept"]


def test_answer_line_targets_ask_the_teacher_nothing_and_keep_every_verified_question(tmp_path, monkeypatch):
    """``completion: answer``: the rows end in the known (real) or solver's (synthetic) answer line alone;
    no reasoning is asked of the teacher, so nothing is rejected for the teacher's mistakes and nothing
    is spent; the data is other data than a reasoning run's (its header differs)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=20, seed=0)
    with FakeOpenAI(samples=real, model="weak", correct_ids=set(), require_key=KEY) as fake:
        knobs = {"maxRealSamples": 20, "targetSamples": 32, "attempts": 1, "completion": "answer"}
        proc, result = run(tmp_path, fake, **knobs)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert fake.chat_requests == []
        assert (result["kept"], result["real"], result["synthetic"]) == (32, 20, 12)
        assert result["costUsd"] == 0 and result["requests"] == 0
        assert "answer targets" in proc.stdout
        rows = rows_of(result)
        for row in rows:
            hand = parse_tiles(row["messages"][1]["content"].split("\n", 1)[0])
            assert row["answer"] == canonical_answer(winning_tiles(hand))
            assert row["messages"][2]["content"] == f"The answer is {row['answer']}."
        check_trl_shape(rows, result["datasetPath"])
        header = json.loads((tmp_path / "out" / "synthesize" / "state.jsonl").read_text().splitlines()[0])
        assert header["header"]["completion"] == "answer"


def test_a_terminated_run_reports_what_it_spent_and_a_retried_run_counts_it_against_the_cap(tmp_path):
    """Issue 15, defect 10: a synthesis run killed mid-way (its pod deleted: SIGTERM) paid for its
    requests. Every response is counted in ``synthesize/spend.json`` as it arrives, the failure result
    carries the same figures for the controller to charge, and a retried run's cap starts from them."""
    task = build_task(TaskSpec.model_validate(MAHJONG))
    real = select_real(task.load("train"), limit=40, seed=0)
    ledger = tmp_path / "out" / "synthesize" / "spend.json"
    # Five answers, then the teacher holds every request: the run is still waiting when it is terminated.
    with FakeOpenAI(samples=real, model="m", correct_ids={s.id for s in real}, hold_after=5) as fake:
        cfg = write_config(tmp_path, fake, targetSamples=40, augment="none", attempts=1)
        result_path = tmp_path / "result.json"
        env = {**os.environ, "TEACHER_API_KEY": KEY}
        cmd = [sys.executable, "-m", "stratos.workloads.synthesize", "--config", str(cfg),
               "--result", str(result_path)]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not ledger.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ledger.exists(), "no response was counted"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 143
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    first = json.loads(result_path.read_text())
    recorded = json.loads(ledger.read_text())
    assert first["ok"] is False and first["kind"] == "Terminated"
    assert first["costUsd"] == pytest.approx(recorded["costUsd"]) and recorded["costUsd"] > 0
    assert (first["promptTokens"], first["completionTokens"]) == (
        recorded["promptTokens"],
        recorded["completionTokens"],
    )
    # What the decided items count can only be less (an item in flight is counted once decided).
    entries = [
        json.loads(line) for line in (tmp_path / "out/synthesize/state.jsonl").read_text().splitlines()
    ]
    assert sum(e.get("costUSD", 0) for e in entries[1:]) <= recorded["costUsd"] + 1e-12
    # The retry's cap counts what was spent: with 0.009 USD more (one request's worst case, prompt bytes +
    # 2,048 tokens at 2 USD per million, fits) it spends some, and stops within the budget, in all.
    budget = first["costUsd"] + 0.009
    with FakeOpenAI(samples=real, model="m", correct_ids={s.id for s in real}) as again:
        proc2, second = run(tmp_path, again, targetSamples=40, augment="none", attempts=1, budgetUsd=budget)
    assert proc2.returncode == 0, proc2.stderr[-2000:]
    assert second["stoppedEarly"] == "budget"
    assert first["costUsd"] < second["costUsd"] <= budget
    assert second["costUsd"] == pytest.approx(json.loads(ledger.read_text())["costUsd"])
