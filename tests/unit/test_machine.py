"""The stage machine's SelectServer stage, driven as the operator drives it, without an API server."""

from __future__ import annotations

import copy

from stratos.api.status import DistillationJobStatus
from stratos.pipeline.machine import reconcile
from stratos.pipeline.status_patch import status_patch
from support.jobs import NODES, NOW, conditions, job, node

PAPER = {"costWindow": 0.2, "rule": "paper"}  # the grid alone picks the node (the paper's greedy rule)


def test_selects_the_node_in_the_dominating_cell_and_records_why() -> None:
    out = reconcile(job(servers=PAPER), nodes=NODES, executor=None, now=NOW)
    DistillationJobStatus.model_validate(out.status)  # every field is one the CRD's schema keeps
    server = out.status["server"]
    assert server["node"] == "a-4090"
    assert server["gpu"] == {"model": "RTX 4090", "count": 1, "memoryGib": 24.0}
    assert server["gridSize"] == 5
    assert server["cell"] == [0, 0, 0]
    assert server["paretoCells"] == [[0, 0, 0]]
    assert {r["node"] for r in server["runnersUp"]} == {"b-h20", "c-3090"}
    assert all(r["reason"] for r in server["runnersUp"])
    assert server["candidates"] == 3 and server["feasible"] == 3
    cond = conditions(out.status)["ServerSelected"]
    assert (cond["status"], cond["reason"], cond["observedGeneration"]) == ("True", "NodeSelected", 1)
    assert "a-4090" in cond["message"]
    assert out.status["observedGeneration"] == 1
    assert out.status["stage"] == "EvaluateTeachers"
    assert [(e.type, e.reason) for e in out.events] == [("Normal", "NodeSelected")]
    # In progress: whether the job will be Ready is not known yet (Unknown, not False).
    ready = conditions(out.status)["Ready"]
    assert (ready["status"], ready["reason"]) == ("Unknown", "EvaluatingTeachers")


def test_the_joint_rule_shortlists_the_pareto_front_and_leaves_the_node_to_the_student_stage() -> None:
    out = reconcile(job(), nodes=NODES, executor=None, now=NOW)
    DistillationJobStatus.model_validate(out.status)
    server = out.status["server"]
    assert "node" not in server and "runnersUp" not in server
    assert server["gridSize"] == 5 and server["paretoCells"] == [[0, 0, 0]]
    assert server["candidates"] == 3 and server["feasible"] == 3
    # c-3090 is cheapest, b-h20 nearest and has the most memory, a-4090 the most compute: none dominates
    assert "3 of 3 feasible node(s) are not dominated" in server["reason"]
    cond = conditions(out.status)["ServerSelected"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "Shortlisted")
    assert out.status["stage"] == "EvaluateTeachers"


def test_reconciling_the_written_status_again_changes_nothing() -> None:
    body = job()
    first = reconcile(body, nodes=NODES, executor=None, now=NOW)
    body["status"] = copy.deepcopy(first.status)
    second = reconcile(body, nodes=NODES, executor=None, now=NOW)
    assert status_patch(body["status"], second.status) == {}
    assert second.events == []


def test_a_recorded_decision_survives_node_changes_and_restarts() -> None:
    body = job(servers=PAPER)
    body["status"] = reconcile(body, nodes=NODES, executor=None, now=NOW).status
    cheaper = [*NODES, node("z-h20-cheap", "NVIDIA-H20", 0.01, 1)]
    again = reconcile(body, nodes=cheaper, executor=None, now=NOW)
    assert again.status["server"]["node"] == "a-4090"


def test_no_feasible_node_counts_rejections_and_retries_when_nodes_change() -> None:
    body = job(requirements={"minAccuracy": 0.15, "maxHourlyCost": 0.1}, servers=PAPER)
    cordoned = node("d-cordoned", "NVIDIA-L20", 0.05, 10, unschedulable=True)
    out = reconcile(body, nodes=[*NODES, cordoned], executor=None, now=NOW)
    cond = conditions(out.status)["ServerSelected"]
    assert (cond["status"], cond["reason"]) == ("False", "NoFeasibleNode")
    assert "3" in cond["message"] and "1" in cond["message"]
    assert out.status["phase"] == "SelectingServer"
    assert "server" not in out.status
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "NoFeasibleNode")]

    body["status"] = out.status
    cheap = node("e-l20", "NVIDIA-L20", 0.08, 10)
    later = reconcile(body, nodes=[*NODES, cordoned, cheap], executor=None, now=NOW)
    assert later.status["server"]["node"] == "e-l20"
    assert conditions(later.status)["ServerSelected"]["status"] == "True"


def test_invalid_spec_fails_with_a_message_naming_the_field() -> None:
    body = job(requirements={"minAccuracy": 1.5}, servers=PAPER)
    out = reconcile(body, nodes=NODES, executor=None, now=NOW)
    cond = conditions(out.status)["Failed"]
    assert (cond["status"], cond["reason"]) == ("True", "InvalidSpec")
    assert "spec.requirements.minAccuracy" in cond["message"]
    assert out.status["phase"] == "Failed"
    assert conditions(out.status)["Ready"]["status"] == "False"
    body["status"] = out.status
    assert reconcile(body, nodes=NODES, executor=None, now=NOW).events == []  # no event storm

    fixed = job(servers=PAPER)
    fixed["metadata"]["generation"] = 2
    fixed["status"] = out.status
    recovered = reconcile(fixed, nodes=NODES, executor=None, now=NOW)
    assert recovered.status["server"]["node"] == "a-4090"
    assert "Failed" not in conditions(recovered.status)


def test_suspended_job_does_not_start() -> None:
    out = reconcile(job(suspend=True), nodes=NODES, executor=None, now=NOW)
    assert out.status["phase"] == "Suspended"
    assert "server" not in out.status
    assert conditions(out.status)["Suspended"]["status"] == "True"
    assert (conditions(out.status)["Ready"]["status"], conditions(out.status)["Ready"]["reason"]) == (
        "False",
        "Suspended",
    )
