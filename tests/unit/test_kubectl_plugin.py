"""``kubectl stratos``: which pod ``logs`` reads, what ``get`` lists, and how it is installed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from stratos.kubectl import app, describe_spec, job_row, pick_pod, termination_message

REPO_ROOT = Path(__file__).resolve().parents[2]


def pod(name: str, stage: str, created: str, candidate: str | None = None, **status: Any) -> dict[str, Any]:
    labels = {"stratos.io/job": "dj1", "stratos.io/stage": stage}
    if candidate:
        labels["stratos.io/candidate"] = candidate
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created}, "status": status}


def test_logs_reads_the_newest_pod_of_the_stage() -> None:
    pods = [
        pod("dj1-train-a-1", "train", "2026-11-30T01:00:00Z", "a"),
        pod("dj1-train-a-2", "train", "2026-11-30T01:05:00Z", "a"),  # the retry
        pod("dj1-synthesize-1", "synthesize", "2026-11-30T01:10:00Z"),
    ]
    chosen, why = pick_pod(pods, "train", None)
    assert chosen is not None and chosen["metadata"]["name"] == "dj1-train-a-2" and why == ""


def test_several_candidates_need_one_picked_and_a_missing_stage_says_so() -> None:
    pods = [
        pod("dj1-student-probe-a", "student-probe", "2026-11-30T01:00:00Z", "a"),
        pod("dj1-student-probe-b", "student-probe", "2026-11-30T01:00:00Z", "b"),
    ]
    assert pick_pod(pods, "student-probe", None) == (
        None,
        "stage student-probe ran for several candidates (a, b): pick one with --candidate",
    )
    chosen, _ = pick_pod(pods, "student-probe", "b")
    assert chosen is not None and chosen["metadata"]["name"] == "dj1-student-probe-b"
    assert pick_pod(pods, "student-probe", "c") == (
        None,
        "no pod of stage student-probe for candidate c (candidates: a, b)",
    )
    assert pick_pod(pods, "train", None) == (None, "no pod of stage train")


def test_the_result_is_the_termination_message() -> None:
    done = pod(
        "p",
        "train",
        "t",
        containerStatuses=[{"state": {"terminated": {"exitCode": 0, "message": '{"ok": true}'}}}],
    )
    assert termination_message(done) == '{"ok": true}'
    assert termination_message(pod("p", "train", "t")) == ""


def test_get_lists_one_row_per_job() -> None:
    dj = {
        "metadata": {"name": "dj1"},
        "status": {
            "phase": "Serving",
            "stage": "Serving",
            "server": {"node": "gpu-1"},
            "teacher": {"selected": "t1"},
            "student": {"selected": "s1"},
            "evaluation": {"accuracy": 0.8125},
            "endpoint": {
                "url": "http://dj1-serve.ns.svc:8000/v1",
                "externalUrl": "https://llm.example.com/v1",
            },
        },
    }
    assert job_row(dj) == [
        "dj1",
        "Serving",
        "Serving",
        "gpu-1",
        "t1",
        "s1",
        "81.2%",
        "https://llm.example.com/v1",
    ]
    assert job_row({"metadata": {"name": "new"}}) == ["new", "Pending", "", "-", "-", "-", "-", "-"]


def test_describe_shows_the_spec_in_brief() -> None:
    dj = {
        "spec": {
            "task": {"builtin": "gsm8k"},
            "teachers": [{"name": "t1"}, {"name": "t2"}],
            "students": [{"name": "s1"}],
            "queueName": "team-a",
            "serving": {"enabled": False, "engine": "transformers"},
        }
    }
    assert describe_spec(dj) == [
        "Task:      gsm8k",
        "Teachers:  t1, t2",
        "Students:  s1",
        "Queue:     team-a",
        "Suspend:   False",
        "Serving:   off (transformers)",
    ]


def test_the_package_installs_the_plugin_and_it_lists_its_commands() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["kubectl-stratos"] == "stratos.kubectl:app"
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("get", "describe", "logs", "plan"):
        assert command in result.output
