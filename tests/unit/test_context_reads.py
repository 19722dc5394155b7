"""Typed reads of the status in a step's Context: decisions come back as their status models."""

from __future__ import annotations

from typing import Any

import pytest

from stratos.api.spec import DistillationJobSpec
from stratos.api.status import DistillationJobStatus, GPUInfo, ServerDecision
from stratos.pipeline.context import Context, MissingDecision, PlanOnly
from stratos.pipeline.machine import reconcile
from support.jobs import NOW, conditions, job


def context(status: dict[str, Any]) -> Context:
    body = job()
    spec = DistillationJobSpec.model_validate(body["spec"])
    return Context(body, spec, DistillationJobStatus.read(status), 1, NOW, [], PlanOnly())


def test_the_chosen_server_reads_typed_from_the_status_block() -> None:
    ctx = context(
        {
            "server": {
                "node": "n1",
                "hourlyCost": 2.5,
                "gpu": {"model": "H100", "count": 2, "memoryGib": 80},
            },
            "cost": {"spentUsd": 1.25},
        }
    )
    server = ctx.chosen_server()
    assert (server.node, server.hourly_cost, server.gpu_model, server.gpu_count, server.gpu_memory_gib) == (
        "n1",
        2.5,
        "H100",
        2,
        80.0,
    )
    assert ctx.spent_usd == 1.25
    assert ctx.status.written()["server"]["gpu"]["memoryGib"] == 80  # reading changes nothing in the status


def test_a_decision_an_earlier_stage_did_not_record_is_named_when_read() -> None:
    ctx = context({"server": {"node": "n1"}})
    assert ctx.chosen_server().node == "n1"
    with pytest.raises(MissingDecision, match=r"status\.server\.hourlyCost"):
        _ = ctx.chosen_server().hourly_cost
    with pytest.raises(MissingDecision, match=r"status\.teacher\.selected"):
        ctx.selected_teacher()
    assert ctx.spent_usd == 0.0


def test_a_step_missing_a_decision_reports_it_as_the_reconcile_error() -> None:
    body = job()
    body["status"] = {"stage": "Train", "student": {"selected": "tiny"}}
    outcome = reconcile(body, nodes=[], executor=None, now=NOW)
    error = conditions(outcome.status)["ReconcileError"]
    assert error["reason"] == "MissingDecision"
    assert "status.server is not set" in error["message"]


def test_a_block_built_in_code_is_written_whole_and_one_read_back_writes_only_its_keys() -> None:
    built = ServerDecision(node="n1", gpu=GPUInfo(model="H100"))
    assert (
        built.written()
        == built.to_api()
        == {
            "node": "n1",
            "gpu": {"model": "H100"},
            "cell": [],
            "paretoCells": [],
            "runnersUp": [],
            "rejected": {},
        }
    )
    stored = ServerDecision.read({"node": "n1", "gpu": {"model": "H100"}})
    assert stored.written() == {"node": "n1", "gpu": {"model": "H100"}}
    stored.hourly_cost = 2.5
    stored.region = None
    assert stored.written() == {"node": "n1", "gpu": {"model": "H100"}, "hourlyCost": 2.5}


def test_keys_the_status_model_does_not_own_are_written_back_as_they_were() -> None:
    body = job()
    kopf = {"progress": {"stratos/reconcile": {"retries": 1}}}
    body["status"] = {"kopf": kopf, "fromANewerVersion": [1, 2]}
    outcome = reconcile(body, nodes=[], executor=None, now=NOW)
    assert outcome.status["kopf"] == kopf and outcome.status["fromANewerVersion"] == [1, 2]
    assert outcome.status["stage"] == "SelectServer" and outcome.error is None


def test_a_stored_status_the_model_cannot_read_is_reported_and_left_as_it_was() -> None:
    body = job()
    body["status"] = {"stage": "Train", "server": {"node": "n1", "unknownKey": 1}}
    outcome = reconcile(body, nodes=[], executor=None, now=NOW)
    error = conditions(outcome.status)["ReconcileError"]
    assert error["message"].startswith("reading the status: ValidationError")
    assert outcome.status["server"] == {"node": "n1", "unknownKey": 1} and outcome.status["stage"] == "Train"


def test_a_condition_message_past_the_limit_is_cut_and_posts_its_event_once() -> None:
    """The one rule (api.status.next_condition) cuts the message to metav1's limit; the same long verdict
    set again is no change, so its event is not posted again on every reconcile."""
    ctx = context({})
    long = "x" * 40_000
    ctx.condition("DataReady", "False", "Waiting", long, event="Warning")
    ctx.condition("DataReady", "False", "Waiting", long, event="Warning")
    written = ctx.status.condition("DataReady")
    assert written is not None and len(written.message) == 32_768
    assert [e.reason for e in ctx.events] == ["Waiting"]


def test_the_stored_dict_conditions_follow_the_same_rule() -> None:
    from stratos.pipeline.conditions import set_condition

    first = set_condition([], "Ready", "False", "Training", "t", generation=1, now=NOW)
    assert first[0]["lastTransitionTime"] == "2026-11-22T12:00:00Z"
    later = NOW.replace(hour=(NOW.hour + 1) % 24)
    same = set_condition(first, "Ready", "False", "Evaluating", "e" * 40_000, generation=2, now=later)
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"]
    assert same[0]["observedGeneration"] == 2 and len(same[0]["message"]) == 32_768
    flipped = set_condition(same, "Ready", "True", "Serving", "up", generation=2, now=later)
    assert flipped[0]["lastTransitionTime"] != first[0]["lastTransitionTime"] and len(flipped) == 1
