"""The machine's failure paths: nothing loops invisibly, terminal stays quiet, edits are never silent.

Each test drives ``reconcile`` as the operator's timer does (body in, status out, status written back)
with executors that answer like Kubernetes would, and checks the conditions, events and stage.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from stratos.api.placement import ServingSpec
from stratos.api.spec import DatasetSpec, DistillationJobSpec
from stratos.api.status import DistillationJobStatus
from stratos.contracts.runs import STORAGE_DIR, EndpointRequest, EndpointState, RunStatus, StageRun
from stratos.controller.announce import event_name, queue
from stratos.kube.config import OperatorConfig
from stratos.kube.serving import desired_serving
from stratos.kube.views import completed_without_result, run_state
from stratos.pipeline.context import ChildRejected, Event
from stratos.pipeline.machine import reads_nodes, reconcile
from stratos.pipeline.status_patch import status_patch
from support.jobs import NOW, conditions, job, node

NODES = [node("gpu", "NVIDIA-L4", 0.5, 10)]
STUDENTS = [
    {"name": "a", "model": {"uri": "/models/a", "parameters": 1.0e8}},
    {"name": "b", "model": {"uri": "/models/b", "parameters": 2.0e8}},
]
ORDER = ["teacher-eval", "student-probe", "synthesize", "train", "evaluate"]


def done(**result: Any) -> RunStatus:
    return RunStatus("Succeeded", result={"ok": True, **result})


class Cluster:
    """Answers every stage run as a finished Job would; ``stop_at`` keeps that stage running, ``raises``
    makes ensuring it raise; the endpoint is planned with the real serving manifests."""

    storage_root = STORAGE_DIR

    def __init__(self, *, stop_at: str | None = None, raises: dict[str, Exception] | None = None) -> None:
        self.stop_at, self.raises = stop_at, raises or {}
        self.started: list[StageRun] = []
        self.endpoints = 0

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        return None  # the job's claim exists

    def cancel_runs(self) -> None:
        pass

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        self.started.append(run)
        if run.stage in self.raises:
            raise self.raises[run.stage]
        if self.stop_at is not None and ORDER.index(run.stage) >= ORDER.index(self.stop_at):
            return RunStatus("Running", message="running")
        results: dict[str, dict[str, Any]] = {
            "teacher-eval": {"accuracy": 0.9, "samples": 10, "correct": 9, "costUSD": 0.01},
            "student-probe": {"accuracy": 0.7},
            "synthesize": {"kept": 40, "real": 30, "synthetic": 10, "costUSD": 0.1, "strategy": "alignment"},
            "train": {
                "steps": 10,
                "seconds": 60.0,
                **({"mergedPath": "x"} if run.config.get("merge") else {}),
            },
            "evaluate": {"accuracy": 0.9, "samples": 10, "correct": 9},
        }
        return done(**results[run.stage])

    def ensure_endpoint(self, request: EndpointRequest, spec: DistillationJobSpec) -> EndpointState:
        self.endpoints += 1
        plan = desired_serving(
            {"metadata": {"name": "dj1", "namespace": "ns", "uid": "u-1"}},
            spec,
            node=request.node,
            gpus=request.gpus,
            base_model_uri=request.base_model_uri,
            adapter_path=request.adapter_path,
            merged_path=request.merged_path,
            model_name=request.model_name,
            cfg=OperatorConfig(default_claim="data"),
        )
        assert plan is not None
        return EndpointState("Pending", message="rolling out")

    def remove_endpoint(self) -> None:
        pass

    def probe_endpoint(self, url: str, model: str) -> Any:
        raise AssertionError("never ready here")


def tick(body: dict[str, Any], executor: Any, *, nodes: Any = NODES, times: int = 1) -> Any:
    out = None
    for _ in range(times):
        out = reconcile(body, nodes=nodes, executor=executor, now=NOW)
        body["status"] = out.status
    DistillationJobStatus.model_validate(body["status"])
    return out


def pipeline(**spec: Any) -> dict[str, Any]:
    # The paper's rule: the node is chosen (and announced) at SelectServer, before the teacher.
    spec.setdefault("servers", {"costWindow": 0.2, "rule": "paper"})
    return job(students=STUDENTS, requirements={"minAccuracy": 0.5}, **spec)


# ------------------------------------------------------------------ defect 4: terminal stays quiet


def test_a_job_failed_by_a_refused_child_stays_quiet_until_its_generation_changes() -> None:
    refusing = Cluster(raises={"teacher-eval": ChildRejected("Job", "requests.cpu must be <= limits.cpu")})
    body = pipeline()
    first = tick(body, refusing)
    failed = conditions(first.status)["Failed"]
    assert (failed["reason"], failed["observedGeneration"]) == ("InvalidSpec", 1)
    assert [e.reason for e in first.events] == ["NodeSelected", "InvalidSpec"]
    for _ in range(3):  # the same generation: no event, nothing to write, no new attempt
        before, tried = copy.deepcopy(body["status"]), len(refusing.started)
        again = tick(body, refusing)
        assert again.events == [] and status_patch(before, again.status) == {}
        assert len(refusing.started) == tried

    body["metadata"]["generation"] = 2  # an edit: tried again, from the top
    fixed = tick(body, Cluster(stop_at="teacher-eval"))
    assert "Failed" not in conditions(fixed.status)
    assert fixed.status["phase"] == "EvaluatingTeachers" and fixed.status["observedGeneration"] == 2


# ------------------------------------------------------------ defect 2: exceptions end as conditions


def test_an_unexpected_exception_is_a_condition_keeps_earlier_decisions_and_the_old_generation() -> None:
    body = pipeline(serving={"enabled": False})
    tick(body, Cluster(stop_at="synthesize"), times=3)
    body["metadata"]["generation"] = 2
    out = tick(body, Cluster(raises={"synthesize": RuntimeError("disk on fire")}))
    cond = conditions(out.status)["ReconcileError"]
    assert (cond["status"], cond["reason"]) == ("True", "RuntimeError")
    assert cond["message"] == "stage Synthesize: RuntimeError: disk on fire"
    assert isinstance(out.error, RuntimeError)
    assert out.status["observedGeneration"] == 1  # generation 2 was not acted on
    assert out.status["student"]["selected"] == "a" and out.status["stage"] == "Synthesize"
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "ReconcileError")]
    assert tick(body, Cluster(raises={"synthesize": RuntimeError("disk on fire")})).events == []  # once

    recovered = tick(body, Cluster(stop_at="train"))
    assert "ReconcileError" not in conditions(recovered.status) and recovered.error is None
    assert recovered.status["observedGeneration"] == 2


def test_a_pattern_that_overflows_the_regex_compiler_fails_the_spec_naming_the_field() -> None:
    pattern = "(" * 500 + "a" + ")" * 500  # within maxLength; re.compile raises RecursionError
    with pytest.raises(ValidationError, match="too complex"):
        DatasetSpec.model_validate({"train": "/d.jsonl", "verifier": "regex", "pattern": pattern})
    body = job(
        task={"builtin": "jsonl", "dataset": {"train": "/d.jsonl", "verifier": "regex", "pattern": pattern}}
    )
    out = tick(body, Cluster())
    failed = conditions(out.status)["Failed"]
    assert failed["reason"] == "InvalidSpec" and "spec.task.dataset.pattern" in failed["message"]


@pytest.mark.parametrize("gpus", ["0", "500m", "1.5", 0])
def test_vllm_serving_refuses_gpu_quantities_that_are_not_a_whole_gpu(gpus: Any) -> None:
    with pytest.raises(ValidationError, match="whole number of GPUs"):
        ServingSpec.model_validate({"engine": "vllm", "resources": {"limits": {"nvidia.com/gpu": gpus}}})


def test_gpu_quantities_are_parsed_as_kubernetes_parses_them() -> None:
    spec = DistillationJobSpec.model_validate(
        {**job()["spec"], "serving": {"resources": {"limits": {"nvidia.com/gpu": "2000m"}}}}
    )
    plan = desired_serving(
        {"metadata": {"name": "dj1", "namespace": "ns", "uid": "u-1"}},
        spec,
        node="gpu",
        gpus=1,
        base_model_uri="/models/a",
        adapter_path=f"{STORAGE_DIR}/a/adapter",
        merged_path=None,
        model_name="dj1-a",
        cfg=OperatorConfig(default_claim="data"),
    )
    assert plan is not None
    container = plan.deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "--tensor-parallel-size" in container["args"]
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "2"


def test_switching_to_transformers_after_a_lora_adapter_fails_invalid_spec_instead_of_raising() -> None:
    body = pipeline()  # vllm: trained without merged weights
    cluster = Cluster()
    out = tick(body, cluster, times=3)
    assert out.status["phase"] == "Deploying" and "mergedUri" not in out.status["training"]
    body["spec"]["serving"] = {"engine": "transformers"}
    body["metadata"]["generation"] = 2
    out = tick(body, cluster)
    failed = conditions(out.status)["Failed"]
    assert failed["reason"] == "InvalidSpec" and "transformers" in failed["message"]
    assert out.error is None
    assert tick(body, cluster).events == []  # and then quiet

    body["spec"]["serving"] = {"engine": "vllm"}  # the edit back deploys the adapter again
    body["metadata"]["generation"] = 3
    out = tick(body, cluster)
    assert out.status["phase"] == "Deploying" and "Failed" not in conditions(out.status)


def test_an_s3_student_served_by_vllm_is_trained_with_merged_weights_and_deployed_from_them() -> None:
    s3 = [{"name": "a", "model": {"uri": "s3://models/a", "parameters": 1.0e8}}]
    body = job(students=s3, requirements={"minAccuracy": 0.5})
    cluster = Cluster()
    out = tick(body, cluster, times=3)
    train = next(r for r in cluster.started if r.stage == "train")
    assert train.config["merge"] is True
    assert out.status["phase"] == "Deploying" and out.error is None and cluster.endpoints >= 1
    assert "Failed" not in conditions(out.status)


# --------------------------------------------------------------------- defect 3: mid-flight edits


@pytest.mark.parametrize(
    ("stage", "edit", "named"),
    [
        ("train", lambda spec: spec.update(students=STUDENTS[1:]), "student 'a'"),
        ("synthesize", lambda spec: spec["teachers"][0].update(name="renamed"), "teacher 't1'"),
    ],
)
def test_removing_what_a_running_stage_uses_fails_the_job_naming_it(
    stage: str, edit: Any, named: str
) -> None:
    body = pipeline(serving={"enabled": False})
    tick(body, Cluster(stop_at=stage), times=3)
    edit(body["spec"])
    body["metadata"]["generation"] = 2
    out = tick(body, Cluster())  # its pod finished meanwhile
    assert out.error is None
    failed = conditions(out.status)["Failed"]
    assert failed["reason"] == "InvalidSpec" and named in failed["message"]
    assert out.status["observedGeneration"] == 2


# ------------------------------------------------------- defect 9: Job Complete before pod Succeeded


def test_a_complete_job_whose_pod_is_not_yet_seen_succeeded_is_waited_for_not_declared_gone() -> None:
    job_view = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
    running = [{"name": "p", "phase": "Running", "conditions": [], "containerStatuses": []}]
    assert completed_without_result(job_view, running)
    assert run_state(job_view, running).state == "Pending"
    assert run_state(job_view, [], pods_read=True).state == "Failed"  # read from the API: really gone
    succeeded = [
        {
            "name": "p",
            "phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": '{"ok": true}'}}}],
        }
    ]
    assert not completed_without_result(job_view, succeeded)
    assert run_state(job_view, succeeded, pods_read=True) == RunStatus("Succeeded", result={"ok": True})


# --------------------------------------------------------- defect 13: handlers before the node list


def test_without_the_node_list_server_selection_waits_and_running_stages_go_on() -> None:
    fresh = tick(pipeline(), Cluster(), nodes=None)
    cond = conditions(fresh.status)["ServerSelected"]
    assert (cond["status"], cond["reason"]) == ("Unknown", "LoadingNodes") and "server" not in fresh.status

    body = pipeline(serving={"enabled": False})
    tick(body, Cluster(stop_at="train"), times=3)
    out = tick(body, Cluster(), nodes=None)  # training finished while the operator restarted
    assert out.status["phase"] == "Succeeded" and out.status["server"]["node"] == "gpu"


def test_the_jobs_that_wait_for_the_node_list_are_those_whose_next_decision_reads_it() -> None:
    assert reads_nodes(pipeline())  # new: its server is chosen first
    body = pipeline()
    tick(body, Cluster(stop_at="student-probe"), times=3)
    assert body["status"]["stage"] == "SelectStudent" and not reads_nodes(body)  # the paper rule: no
    joint = copy.deepcopy(body)
    joint["spec"]["servers"]["rule"] = "joint"
    assert reads_nodes(joint)  # the joint rule chooses the node with the student
    del joint["spec"]["servers"]["rule"]
    assert reads_nodes(joint)  # joint is the default
    tick(body, Cluster(stop_at="train"), times=3)
    assert body["status"]["stage"] == "Train" and not reads_nodes(body)


def test_a_joint_rule_job_selecting_its_student_keeps_its_server_while_the_node_list_loads() -> None:
    body = pipeline(servers={"costWindow": 0.2, "rule": "joint"})
    tick(body, Cluster(stop_at="student-probe"), times=4)
    assert body["status"]["stage"] == "SelectStudent" and body["status"]["server"]["candidates"] == 1
    before = copy.deepcopy(body["status"])
    out = tick(body, Cluster(stop_at="student-probe"), nodes=None)  # the operator just restarted
    assert out.events == [] and out.status["stage"] == "SelectStudent"
    assert out.status["server"] == before["server"]
    assert conditions(out.status)["ServerSelected"] == conditions(before)["ServerSelected"]


# ------------------------------------------------------------------ defect 1: the announcement outbox


def test_announcements_are_numbered_on_and_kept_until_posted() -> None:
    status: dict[str, Any] = {"announcedSeq": 4}
    pending = [{"seq": 3, "type": "Normal", "reason": "NodeSelected", "message": "m"}]
    queue(
        status, [Event("Normal", "TeacherSelected", "t"), Event("Normal", "StrategySelected", "s")], pending
    )
    assert [(a["seq"], a["reason"]) for a in status["announcements"]] == [
        (3, "NodeSelected"),
        (4, "TeacherSelected"),
        (5, "StrategySelected"),
    ]
    assert status["announcedSeq"] == 6
    DistillationJobStatus.model_validate(status)
    queue(status, [], [])
    assert "announcements" not in status and status["announcedSeq"] == 6
    body = job()
    assert event_name(body, 5) == "dj1.u-1-5" != event_name({"metadata": {"name": "dj1", "uid": "u-2"}}, 5)
