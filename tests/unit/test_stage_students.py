"""SelectStudent through the machine: the paper's Table 2 decision on an RTX 4090 node."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stratos.api.status import DistillationJobStatus
from stratos.contracts.runs import RunStatus
from stratos.pipeline.machine import reconcile
from support.jobs import NOW, ScriptedExecutor, conditions, job, node, ok

# Paper Table 1 ("with 8B CoT") probe accuracies; A = 0.58 for the probe (the 65% of the paper is
# the distilled model's target, not the probe's).
STUDENTS = [
    {"name": "llama-3-2-1b", "model": {"uri": "hf://meta-llama/Llama-3.2-1B", "parameters": 1.24e9}},
    {"name": "qwen-2-5-1-5b", "model": {"uri": "hf://Qwen/Qwen2.5-1.5B", "parameters": 1.54e9}},
    {"name": "llama-3-2-3b", "model": {"uri": "hf://meta-llama/Llama-3.2-3B", "parameters": 3.21e9}},
    {"name": "llama-3-1-8b", "model": {"uri": "hf://meta-llama/Llama-3.1-8B", "parameters": 8.03e9}},
]
PROBES = {"llama-3-2-1b": 0.4420, "qwen-2-5-1-5b": 0.5732, "llama-3-2-3b": 0.5967, "llama-3-1-8b": 0.6149}


def table2_job() -> dict[str, Any]:
    return job(
        requirements={"minAccuracy": 0.58, "maxTrainingTime": "2h", "minTokensPerSecond": 30},
        students=STUDENTS,
        distillation={"targetSamples": 10000},
        servers={"costWindow": 0.2, "rule": "paper"},  # the paper's greedy rule (Table 2)
    )


def probe_states(**overrides: RunStatus) -> dict[str, RunStatus]:
    states = {"t1": ok(0.9)}
    states.update(
        {name: RunStatus("Succeeded", result={"ok": True, "accuracy": acc}) for name, acc in PROBES.items()}
    )
    states.update(overrides)
    return states


def test_table2_rejects_small_students_for_accuracy_the_8b_for_hardware_and_picks_the_3b() -> None:
    executor = ScriptedExecutor(probe_states())
    nodes = [node("gpu-4090", "NVIDIA-GeForce-RTX-4090", 0.35, 20)]
    out = reconcile(table2_job(), nodes=nodes, executor=executor, now=NOW)
    probed = sorted(r.candidate or "" for r in executor.started if r.stage == "student-probe")
    assert probed == ["llama-3-2-1b", "llama-3-2-3b", "qwen-2-5-1-5b"]  # the 8B is never probed
    assert all(r.node == "gpu-4090" and r.gpus == 1 for r in executor.started if r.stage == "student-probe")
    DistillationJobStatus.model_validate(out.status)
    student = out.status["student"]
    assert student["selected"] == "llama-3-2-3b"
    assert student["ranking"] == ["llama-3-2-3b"]
    verdicts = {c["name"]: c["verdict"] for c in student["candidates"]}
    assert "accuracy below threshold" in verdicts["llama-3-2-1b"]
    assert "accuracy below threshold" in verdicts["qwen-2-5-1-5b"]
    assert "memory" in verdicts["llama-3-1-8b"]
    assert conditions(out.status)["StudentSelected"]["status"] == "True"
    assert out.status["stage"] == "Synthesize"


def test_probes_in_flight_keep_the_job_waiting() -> None:
    executor = ScriptedExecutor(
        probe_states(**{"llama-3-2-3b": RunStatus("Running", message="pod p running")})
    )
    nodes = [node("gpu-4090", "NVIDIA-GeForce-RTX-4090", 0.35, 20)]
    out = reconcile(table2_job(), nodes=nodes, executor=executor, now=NOW)
    cond = conditions(out.status)["StudentSelected"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "Probing")
    assert "2 of 3" in cond["message"] and "llama-3-2-3b" in cond["message"]


def test_no_student_survives_so_nothing_is_trained() -> None:
    failing = {name: RunStatus("Succeeded", result={"ok": True, "accuracy": 0.1}) for name in PROBES}
    executor = ScriptedExecutor({**probe_states(), **failing})
    nodes = [node("gpu-4090", "NVIDIA-GeForce-RTX-4090", 0.35, 20)]
    out = reconcile(table2_job(), nodes=nodes, executor=executor, now=NOW)
    cond = conditions(out.status)["StudentSelected"]
    assert (cond["status"], cond["reason"]) == ("False", "NoFeasibleStudent")
    assert out.status["phase"] == "Failed"
    assert not any(r.stage in ("synthesize", "train") for r in executor.started)


# ------------------------------------------------------------------------ servers.rule joint (default)

JOINT_NODES = [
    node("gpu-4090", "NVIDIA-GeForce-RTX-4090", 0.35, 20),
    node("gpu-l20", "NVIDIA-L20", 0.80, 30),
]


def joint_job() -> dict[str, Any]:
    return job(
        requirements={"minAccuracy": 0.65, "maxTrainingTime": "4h", "minTokensPerSecond": 30},
        students=STUDENTS,
        distillation={"targetSamples": 10000},
    )


def test_joint_rule_probes_each_student_on_the_cheapest_node_it_fits_and_records_the_pair() -> None:
    executor = ScriptedExecutor(probe_states())
    out = reconcile(joint_job(), nodes=JOINT_NODES, executor=executor, now=NOW)
    status = DistillationJobStatus.model_validate(out.status).to_api()
    where = {r.candidate: (r.node, r.gpus) for r in executor.started if r.stage == "student-probe"}
    # 24 GiB takes the three small students; only the 48 GiB L20 takes the 8B (32.9 GiB).
    assert where == {
        "llama-3-2-1b": ("gpu-4090", 1),
        "qwen-2-5-1-5b": ("gpu-4090", 1),
        "llama-3-2-3b": ("gpu-4090", 1),
        "llama-3-1-8b": ("gpu-l20", 1),
    }
    student = status["student"]
    assert student["rule"] == "joint"
    verdicts = {c["name"]: c for c in student["candidates"]}
    assert (
        verdicts["llama-3-2-1b"]["verdict"]
        == "dropped: probe 44.2% more than 10 points below the best (61.5%)"
    )
    assert verdicts["llama-3-2-1b"]["kept"] is False
    assert verdicts["llama-3-2-3b"]["kept"] is True and verdicts["llama-3-2-3b"]["probeNode"] == "gpu-4090"
    assert "within 10 points of the best (61.5%)" in verdicts["qwen-2-5-1-5b"]["verdict"]
    pair = student["pair"]
    assert pair["student"] == student["selected"] and pair["node"] == status["server"]["node"]
    assert verdicts[pair["student"]]["verdict"].startswith(f"selected with node {pair['node']}")
    cost = pair["cost"]
    parts = (
        "trainingUsd",
        "evaluationUsd",
        "hostingUsd",
        "synthesisUsd",
        "teacherEvaluationUsd",
        "probesUsd",
    )
    assert cost["totalUsd"] == pytest.approx(sum(cost[k] for k in parts), abs=1e-3)
    assert cost["teacherEvaluationUsd"] == pytest.approx(0.01) and cost["probesUsd"] > 0
    # synthesis: 10,000 answers x 20 tokens per answer / yield 0.9 x $0 per 1M (the test teacher is free)
    assert cost["synthesisUsd"] == 0.0 and pair["costBreakdown"].startswith(
        f"${cost['totalUsd']:.2f} = training"
    )
    assert pair["runnersUp"] and all(r["utility"] <= pair["utility"] for r in pair["runnersUp"])
    assert all(r["reason"].startswith(("U ", "same U")) for r in pair["runnersUp"])
    # Every kept student other than the winner with a feasible pair on the chosen node is a fallback.
    assert student["ranking"][0] == pair["student"]
    assert "fallback" in pair and pair["fallback"].startswith("if the chosen student misses minAccuracy")
    # The training stage reads each ranked student's time on the chosen node from the candidates.
    on_node = {(r["node"], r["student"]): r for r in pair["runnersUp"]}
    for name in student["ranking"]:
        hours = (
            pair["trainingTimeHours"]
            if name == pair["student"]
            else on_node[(pair["node"], name)]["trainingTimeHours"]
        )
        assert verdicts[name]["trainingTimeHours"] == pytest.approx(hours, abs=1e-3)
    assert verdicts["llama-3-2-1b"].get("trainingTimeHours") is None  # dropped: never trained
    conds = conditions(out.status)
    assert (conds["ServerSelected"]["status"], conds["ServerSelected"]["reason"]) == ("True", "NodeSelected")
    assert conds["StudentSelected"]["status"] == "True"
    assert out.status["stage"] == "Synthesize"
    assert status["server"]["gpu"]["model"] in ("RTX 4090", "L20")


def test_joint_rule_status_stays_small_at_5000_nodes() -> None:
    products = [
        ("NVIDIA-GeForce-RTX-4090", 0.35),
        ("NVIDIA-L20", 0.8),
        ("NVIDIA-H20", 1.2),
        ("NVIDIA-A100-SXM4-80GB", 1.6),
        ("NVIDIA-GeForce-RTX-3090", 0.22),
    ]
    nodes = []
    for i in range(5000):
        product, price = products[i % len(products)]
        count = (1, 2, 4, 8)[(i // 5) % 4]
        nodes.append(node(f"n{i:04d}", product, round(price * count * (0.8 + (i % 37) / 90), 4),
                          5 + (i * 7919) % 225, count=count))  # fmt: skip
    out = reconcile(joint_job(), nodes=nodes, executor=ScriptedExecutor(probe_states()), now=NOW)
    assert out.status["stage"] == "Synthesize", out.status.get("message")
    DistillationJobStatus.model_validate(out.status)
    size = len(json.dumps(out.status))
    assert size < 64 * 1024, size
    assert out.status["server"]["candidates"] == 5000


def test_under_injection_the_probe_ranks_but_only_the_trained_result_must_meet_a() -> None:
    """A teacher below A means injection: students that score under A on the probe (as any student that
    lacks the knowledge does) stay candidates, ranked by M; the same probes under alignment fail."""
    weak = {name: RunStatus("Succeeded", result={"ok": True, "accuracy": 0.1}) for name in PROBES}
    nodes = [node("gpu-4090", "NVIDIA-GeForce-RTX-4090", 0.35, 20)]
    executor = ScriptedExecutor({**probe_states(t1=ok(0.3)), **weak})
    out = reconcile(table2_job(), nodes=nodes, executor=executor, now=NOW)
    assert out.status["strategy"]["selected"] == "injection"
    student = out.status["student"]
    assert student["selected"] is not None and len(student["ranking"]) == 3  # the 8B does not fit
    assert not any("below threshold" in c["verdict"] for c in student["candidates"])
    assert out.status["stage"] == "Synthesize"
