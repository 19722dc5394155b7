"""EvaluateTeachers: the machine fans out teacher-eval runs and records decisions 2 and 3."""

from __future__ import annotations

from typing import Any

from stratos.api.status import DistillationJobStatus
from stratos.contracts.runs import RunStatus
from stratos.pipeline.machine import reconcile
from support.jobs import NODES, NOW, ScriptedExecutor, conditions, job, ok


def teacher(name: str, url: str, price: float) -> dict[str, Any]:
    return {"name": name, "endpoint": {"baseURL": url, "model": name}, "costPerMillionTokens": price}


def teachers_job(**overrides: Any) -> dict[str, Any]:
    return job(
        teachers=[
            {
                "name": "gpt-4o",
                "endpoint": {
                    "baseURL": "https://api.example.com/v1",
                    "model": "gpt-4o",
                    "apiKeySecretRef": {"name": "openai", "key": "api-key"},
                },
                "costPerMillionTokens": 5,
            },
            {
                "name": "qwen-72b",
                "endpoint": {"baseURL": "http://qwen:8000/v1", "model": "q"},
                "costPerMillionTokens": 0.9,
            },
            {
                "name": "r1",
                "endpoint": {"baseURL": "http://r1:8000/v1", "model": "r1"},
                "costPerMillionTokens": 2.19,
            },
        ],
        **overrides,
    )


def run_to_teachers(executor: ScriptedExecutor, body: dict[str, Any]) -> Any:
    return reconcile(body, nodes=NODES, executor=executor, now=NOW)


def test_waits_for_every_teacher_and_starts_one_run_each_with_the_key_by_reference() -> None:
    executor = ScriptedExecutor({"gpt-4o": ok(0.9)})
    out = run_to_teachers(executor, teachers_job())
    assert out.status["stage"] == "EvaluateTeachers"
    assert sorted(r.candidate or "" for r in executor.started) == ["gpt-4o", "qwen-72b", "r1"]
    gpt = next(r for r in executor.started if r.candidate == "gpt-4o")
    assert gpt.program == "stratos.workloads.teacher_eval"
    assert gpt.node is None and gpt.gpus == 0  # CPU work, not pinned to the GPU node
    assert [(s.env, s.secret, s.key) for s in gpt.secret_env] == [("TEACHER_API_KEY", "openai", "api-key")]
    assert gpt.config["apiKeyEnv"] == "TEACHER_API_KEY"
    assert "api-key" not in str(gpt.config)
    assert gpt.config["outputDir"] == "/data/jobs/dj1-u-1"
    cond = conditions(out.status)["TeacherSelected"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "Evaluating")
    assert "1 of 3" in cond["message"]


def test_paper_mahjong_numbers_pick_the_cheapest_teacher_that_meets_A_then_alignment() -> None:
    # Paper Table 3: GPT-4o 4%, (Claude 9%), DeepSeek-R1 21%; A = 15%: only R1 qualifies.
    executor = ScriptedExecutor({"gpt-4o": ok(0.04), "qwen-72b": ok(0.09), "r1": ok(0.21)})
    out = run_to_teachers(executor, teachers_job())
    DistillationJobStatus.model_validate(out.status)
    assert out.status["teacher"]["selected"] == "r1"
    assert out.status["strategy"]["selected"] == "alignment"
    assert out.status["strategy"]["algorithm"] == "sft-lora"
    verdicts = {c["name"]: c for c in out.status["teacher"]["candidates"]}
    assert verdicts["gpt-4o"]["accuracy"] == 0.04 and verdicts["gpt-4o"]["verdict"]
    cost = out.status["cost"]
    assert (cost["teacherTokens"], cost["spentUsd"]) == (6000, 0.03)
    assert [(c["candidate"], c["usd"], c["tokens"]) for c in cost["charges"]] == [
        ("gpt-4o", 0.01, 2000), ("qwen-72b", 0.01, 2000), ("r1", 0.01, 2000)
    ]  # fmt: skip
    assert out.status["stage"] == "SelectStudent"
    reasons = [e.reason for e in out.events]
    assert "TeacherSelected" in reasons and "StrategySelected" in reasons


def test_nobody_meets_A_so_the_most_accurate_is_chosen_and_injection_follows() -> None:
    body = teachers_job(requirements={"minAccuracy": 0.5})
    executor = ScriptedExecutor({"gpt-4o": ok(0.04), "qwen-72b": ok(0.09), "r1": ok(0.21)})
    out = run_to_teachers(executor, body)
    assert out.status["teacher"]["selected"] == "r1"
    assert out.status["strategy"]["selected"] == "injection"


def test_a_failed_teacher_is_recorded_and_selection_goes_on() -> None:
    failed = RunStatus("Failed", message="BackoffLimitExceeded; last pod: exited 1 (Error): 401 unauthorized")
    executor = ScriptedExecutor({"gpt-4o": failed, "qwen-72b": ok(0.5), "r1": ok(0.6)})
    out = run_to_teachers(executor, teachers_job())
    assert out.status["teacher"]["selected"] == "qwen-72b"  # cheapest of those meeting 15%
    gpt = next(c for c in out.status["teacher"]["candidates"] if c["name"] == "gpt-4o")
    assert "401" in gpt["error"] and "accuracy" not in gpt


def test_all_teachers_failing_fails_the_job_with_the_reasons() -> None:
    failed = RunStatus("Failed", message="connection refused")
    executor = ScriptedExecutor(dict.fromkeys(("gpt-4o", "qwen-72b", "r1"), failed))
    out = run_to_teachers(executor, teachers_job())
    conds = conditions(out.status)
    assert (conds["TeacherSelected"]["status"], conds["TeacherSelected"]["reason"]) == (
        "False",
        "NoTeacherAvailable",
    )
    assert conds["Failed"]["status"] == "True"
    assert out.status["phase"] == "Failed"
    assert "connection refused" in conds["TeacherSelected"]["message"]
