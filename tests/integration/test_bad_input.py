"""Bad input on the real control plane (issue #8, item 4): malformed DistillationJobs and garbage Nodes.

A malformed DistillationJob is either refused by the API server at ``kubectl apply``, with a message that
names the field (``API_REJECTS``: wrong types, negative or absurd numbers, empty teacher or student
pools, unknown tasks and enums, all-zero weights, conflicting fields, oversized strings and maps,
duplicate names, bad URIs, bad durations, unknown fields, NaN and infinities), or accepted by it and then
stopped by the operator (``OPERATOR_STOPS``): the job ends Failed with reason InvalidSpec and a message
naming the field, or, where the input is a missing object the operator may not read (a Secret, a
PersistentVolumeClaim), it waits with a condition that names the object and the teacher. The operator
never crashes or loops on any of them: it keeps serving a good job beside them, its log has no
traceback, and their status stops changing.

Nodes with garbage GPU labels and annotations are skipped, each counted under its reason in
``status.server.rejected`` or in the NoFeasibleNode message.

test_crd_apply.py has 25 more bad objects (BAD there), checked against the models and the API server.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from stratos.decide import nodes as reasons
from support.controlplane import ControlPlane, rest, wait_for
from support.djs import apply, child, condition, get_dj
from support.kubelet import FakeKubelet, Outcome
from support.operator import OperatorProcess

pytest_plugins = ["support.operator"]

TEACHER = {"name": "t1", "endpoint": {"baseURL": "http://teacher:8000/v1", "model": "m"}}
STUDENT = {"name": "s1", "model": {"uri": "hf://org/s1", "parameters": 1.0e9}}


def valid_job(name: str = "bad") -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": {"teachers": [copy.deepcopy(TEACHER)], "students": [copy.deepcopy(STUDENT)]},
    }


Mutation = Callable[[dict[str, Any]], None]


def nothing(obj: dict[str, Any]) -> None:
    """For the cases sent as raw text."""


def put(path: str, value: Any) -> Mutation:
    """Set ``path`` (dots; list indexes as numbers) to ``value``, creating maps on the way."""

    def mutate(obj: dict[str, Any]) -> None:
        node: Any = obj
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(keys[-1])] = copy.deepcopy(value)
        else:
            node[keys[-1]] = copy.deepcopy(value)

    return mutate


@dataclass(frozen=True)
class Bad:
    """A malformed object: how to break a valid one, the field the message must name, and more of it."""

    id: str
    mutate: Mutation
    field: str
    text: str
    raw: str | None = None  # sent as this text instead, NAME replaced (values JSON cannot carry)


def _yaml_job(requirements: str) -> str:
    return (
        "apiVersion: stratos.io/v1alpha1\nkind: DistillationJob\nmetadata: {name: NAME}\nspec:\n"
        f"  requirements: {{{requirements}}}\n"
        "  teachers: [{name: t1, endpoint: {baseURL: 'http://t/v1', model: m}}]\n"
        "  students: [{name: s1, model: {uri: 'hf://o/s', parameters: 1.0e+9}}]\n"
    )


def _students(*names: str) -> list[dict[str, Any]]:
    return [{**copy.deepcopy(STUDENT), "name": n} for n in names]


MANY_KEYS = {f"k{i}": "v" for i in range(33)}

# What the API server refuses. (field, text) are as kubectl prints them.
API_REJECTS = [
    # wrong types
    Bad("teachers-not-a-list", put("spec.teachers", "t1"), "spec.teachers", "must be of type array"),
    Bad("parameters-as-text", put("spec.students.0.model.parameters", "3B"), "parameters", "type number"),
    Bad("layers-fractional", put("spec.students.0.model.layers", 2.5), "model.layers", "type integer"),
    Bad("latency-as-text", put("spec.requirements.maxLatencyMs", "fast"), "maxLatencyMs", "type number"),
    Bad("duration-as-int", put("spec.requirements.maxTrainingTime", 7200), "maxTrainingTime", "type string"),
    Bad("suspend-as-text", put("spec.suspend", "no"), "spec.suspend", "must be of type boolean"),
    Bad("selector-value-int", put("spec.servers.nodeSelector", {"a": 1}), "nodeSelector.a", "type string"),
    Bad(
        "region-latency-text",
        put("spec.servers.regionLatencyMs", {"us": "fast"}),
        "regionLatencyMs.us",
        "type number",
    ),
    # negative or absurd numbers
    Bad("seed-negative", put("spec.task.seed", -1), "spec.task.seed", "greater than or equal to 0"),
    Bad("sample-size-zero", put("spec.task.sampleSize", 0), "spec.task.sampleSize", "greater than or equal"),
    Bad("sample-size-absurd", put("spec.task.sampleSize", 10**8), "spec.task.sampleSize", "less than or"),
    Bad("train-size-absurd", put("spec.task.trainSize", 10**12), "spec.task.trainSize", "less than or"),
    Bad("min-accuracy-negative", put("spec.requirements.minAccuracy", -0.1), "minAccuracy", "greater than"),
    Bad("min-accuracy-200pct", put("spec.requirements.minAccuracy", 2), "minAccuracy", "less than or equal"),
    Bad(
        "tokens-per-s-absurd", put("spec.requirements.minTokensPerSecond", 1e9), "minTokensPerSecond", "less"
    ),
    Bad("hourly-cost-zero", put("spec.requirements.maxHourlyCost", 0), "maxHourlyCost", "greater than 0"),
    Bad("budget-negative", put("spec.requirements.budget", -1), "spec.requirements.budget", "greater than 0"),
    Bad("weight-above-one", put("spec.requirements.weights.accuracy", 2), "weights.accuracy", "less than"),
    Bad("cost-window-zero", put("spec.servers.costWindow", 0), "spec.servers.costWindow", "greater than 0"),
    Bad("runners-up-absurd", put("spec.servers.runnersUp", 21), "spec.servers.runnersUp", "less than"),
    Bad(
        "region-latency-negative",
        put("spec.servers.regionLatencyMs", {"us": -5}),
        "regionLatencyMs.us",
        "greater than",
    ),
    Bad("gpu-memory-negative", put("spec.servers.minGpuMemoryGib", -1), "minGpuMemoryGib", "greater than"),
    Bad("concurrency-zero", put("spec.teachers.0.maxConcurrency", 0), "maxConcurrency", "greater than"),
    Bad("parameters-negative", put("spec.students.0.model.parameters", -3), "model.parameters", "greater"),
    Bad("parameters-absurd", put("spec.students.0.model.parameters", 1e14), "model.parameters", "less than"),
    Bad("layers-zero", put("spec.students.0.model.layers", 0), "model.layers", "greater than or equal to 1"),
    Bad("epochs-zero", put("spec.distillation.epochs", 0), "spec.distillation.epochs", "greater than"),
    Bad("sequence-too-short", put("spec.distillation.sequenceLength", 32), "sequenceLength", "greater than"),
    Bad("learning-rate-five", put("spec.distillation.learningRate", 5), "learningRate", "less than or equal"),
    Bad("lora-rank-zero", put("spec.distillation.lora.rank", 0), "lora.rank", "greater than or equal to 1"),
    Bad("dropout-above-one", put("spec.distillation.lora.dropout", 1.5), "lora.dropout", "less than"),
    Bad("mfu-below-floor", put("spec.distillation.mfu", 0.005), "spec.distillation.mfu", "greater than"),
    Bad("replicas-negative", put("spec.serving.replicas", -1), "spec.serving.replicas", "greater than"),
    Bad("model-len-absurd", put("spec.serving.maxModelLen", 10**9), "spec.serving.maxModelLen", "less than"),
    Bad("backoff-negative", put("spec.retries.backoffLimit", -1), "spec.retries.backoffLimit", "greater"),
    Bad("backoff-absurd", put("spec.retries.backoffLimit", 11), "spec.retries.backoffLimit", "less than"),
    # empty pools
    Bad("no-teachers", put("spec.teachers", []), "spec.teachers", "should have at least 1 items"),
    Bad("no-students", put("spec.students", []), "spec.students", "should have at least 1 items"),
    # unknown task and enum values
    Bad("unknown-task", put("spec.task.builtin", "chess"), "spec.task.builtin", 'Unsupported value: "chess"'),
    Bad("unknown-algorithm", put("spec.distillation.algorithm", "ppo"), "algorithm", "Unsupported value"),
    Bad("unknown-engine", put("spec.serving.engine", "tgi"), "spec.serving.engine", "Unsupported value"),
    Bad("unknown-node-policy", put("spec.servers.nodeLossPolicy", "Ignore"), "nodeLossPolicy", "Unsupported"),
    Bad(
        "unknown-toleration-op",
        put("spec.servers.tolerations", [{"key": "k", "operator": "Maybe"}]),
        "spec.servers.tolerations[0].operator",
        "Unsupported value",
    ),
    # all-zero weights and conflicting fields
    Bad(
        "all-zero-weights",
        put(
            "spec.requirements.weights",
            {"accuracy": 0, "trainingTime": 0, "throughput": 0, "latency": 0, "cost": 0},
        ),
        "spec.requirements.weights",
        "at least one of accuracy, trainingTime, throughput, latency, cost must be greater than zero",
    ),
    Bad(
        "injection-with-dpo",
        put("spec.distillation", {"strategy": "injection", "algorithm": "dpo"}),
        "spec.distillation.algorithm",
        "knowledge injection trains with sft-lora only",
    ),
    Bad(
        "white-box-kd-without-teacher-weights",
        put("spec.distillation", {"strategy": "alignment", "algorithm": "white-box-kd"}),
        "spec.teachers",
        "white-box-kd needs every teacher's own weights",
    ),
    Bad(
        "verifier-without-endpoint",
        put("spec.distillation", {"synthesis": {"verifier": {"costPerMillionTokens": 1}}}),
        "spec.distillation.synthesis.verifier.endpoint",
        "Required value",
    ),
    Bad(
        "storage-pvc-and-uri",
        put("spec.storage", {"pvc": {"claimName": "d"}, "uri": "s3://b/p"}),
        "spec.storage",
        "exactly one of pvc or uri must be set",
    ),
    # oversized strings and maps
    Bad("model-name-257", put("spec.teachers.0.endpoint.model", "m" * 257), "endpoint.model", "Too long"),
    Bad(
        "duration-33-chars",
        put("spec.requirements.maxTrainingTime", "1h" * 17),
        "maxTrainingTime",
        "Too long",
    ),
    Bad(
        "selector-33-keys",
        put("spec.servers.nodeSelector", MANY_KEYS),
        "spec.servers.nodeSelector",
        "Too many",
    ),
    Bad(
        "resources-17-keys",
        put("spec.serving.resources", {"requests": {f"r{i}": 1 for i in range(17)}}),
        "spec.serving.resources.requests",
        "Too many",
    ),
    # duplicate names
    Bad("duplicate-students", put("spec.students", _students("s1", "s1")), "spec.students", "must be unique"),
    # bad URIs and names
    Bad(
        "base-url-javascript",
        put("spec.teachers.0.endpoint.baseURL", "javascript:alert(1)"),
        "spec.teachers[0].endpoint.baseURL",
        "should match",
    ),
    Bad("base-url-no-host", put("spec.teachers.0.endpoint.baseURL", "http://"), "endpoint.baseURL", "match"),
    Bad(
        "base-url-space", put("spec.teachers.0.endpoint.baseURL", "http://a b/v1"), "baseURL", "should match"
    ),
    Bad("student-uri-gs", put("spec.students.0.model.uri", "gs://bucket/m"), "model.uri", "should match"),
    Bad("student-uri-relative", put("spec.students.0.model.uri", "models/x"), "model.uri", "should match"),
    Bad(
        "dataset-over-http",
        put("spec.task", {"builtin": "jsonl", "dataset": {"train": "http://example.com/x.jsonl"}}),
        "spec.task.dataset.train",
        "should match",
    ),
    Bad(
        "dataset-configmap-bad-name",
        put("spec.task", {"builtin": "jsonl", "dataset": {"train": "configmap://Bad_Name/k"}}),
        "spec.task.dataset.train",
        "should match",
    ),
    Bad("storage-ftp", put("spec.storage", {"uri": "ftp://x/y"}), "spec.storage.uri", "should match"),
    Bad("claim-name-empty", put("spec.storage", {"pvc": {"claimName": ""}}), "claimName", "at least 1 chars"),
    Bad(
        "sub-path-absolute",
        put("spec.storage", {"pvc": {"claimName": "d", "subPath": "/etc"}}),
        "spec.storage.pvc.subPath",
        "relative path",
    ),
    Bad(
        "secret-name-not-dns",
        put("spec.teachers.0.endpoint.apiKeySecretRef", {"name": "Bad_Name", "key": "k"}),
        "apiKeySecretRef.name",
        "should match",
    ),
    Bad(
        "secret-ref-without-key",
        put("spec.teachers.0.endpoint.apiKeySecretRef", {"name": "keys"}),
        "spec.teachers[0].endpoint.apiKeySecretRef.key",
        "Required value",
    ),
    Bad(
        "teacher-without-model",
        put("spec.teachers.0.endpoint", {"baseURL": "http://t/v1"}),
        "model",
        "Required",
    ),
    # bad durations
    Bad("duration-negative", put("spec.requirements.maxTrainingTime", "-1h"), "maxTrainingTime", "duration"),
    Bad(
        "duration-empty",
        put("spec.requirements.maxTrainingTime", ""),
        "spec.requirements.maxTrainingTime",
        "duration must be greater than zero",
    ),
    # unknown fields (a typo, status written into spec, an API key pasted into the spec)
    Bad("unknown-spec-field", put("spec.teacher", []), "spec.teacher", "unknown field"),
    Bad("status-in-spec", put("spec.phase", "Serving"), "spec.phase", "unknown field"),
    Bad(
        "inline-api-key",
        put("spec.teachers.0.endpoint.apiKey", "sk-live"),
        "endpoint.apiKey",
        "unknown field",
    ),
    # values JSON cannot carry: refused before anything is stored (the message names the value)
    Bad("nan", nothing, "", "unsupported value: NaN", raw=_yaml_job("minAccuracy: .nan")),
    Bad("infinity", nothing, "", "unsupported value: +Inf", raw=_yaml_job("budget: .inf")),
    Bad(
        "overflow",
        nothing,
        "",
        "cannot unmarshal number 1e999",
        raw=json.dumps(valid_job("NAME")).replace(
            '"spec": {', '"spec": {"requirements": {"budget": 1e999}, '
        ),
    ),
]


def test_the_corpus_is_large_and_distinct() -> None:
    ids = [c.id for c in API_REJECTS] + [c.id for c in OPERATOR_STOPS]
    assert len(ids) == len(set(ids)) and len(ids) >= 30, len(ids)


@pytest.mark.parametrize("case", API_REJECTS, ids=[c.id for c in API_REJECTS])
def test_the_api_server_rejects_naming_the_field(
    control_plane: ControlPlane, crd_installed: Any, namespace: str, api: Any, case: Bad
) -> None:
    name = f"bad-{case.id}"
    if case.raw is not None:
        text = case.raw.replace("NAME", name)
    else:
        obj = valid_job(name)
        case.mutate(obj)
        text = json.dumps(obj)
    result = control_plane.kubectl(
        "apply", "--validate=strict", "-n", namespace, "-f", "-", input=text, check=False
    )
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert case.field in result.stderr and case.text in result.stderr, result.stderr
    stored = rest(api, "GET", f"/apis/stratos.io/v1alpha1/namespaces/{namespace}/distillationjobs")
    assert not stored["items"]  # nothing was stored


# ------------------------------------------------------------------ accepted by the API server, not by us

RESULTS: dict[str, dict[str, Any]] = {
    "teacher-eval": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3, "promptTokens": 9},
    "student-probe": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3},
    "synthesize": {"ok": True, "kept": 32, "real": 24, "synthetic": 8, "rejected": {}, "rejectedTotal": 0},
    "train": {"ok": True, "steps": 4, "seconds": 1.0, "trainLoss": 1.5, "mergedPath": "merged"},
    "evaluate": {"ok": True, "accuracy": 0.5, "samples": 6, "correct": 3},
}


def scripted_success(pod: Mapping[str, Any]) -> Outcome | None:
    """Every stage pod that gets to start succeeds at once with a plausible result."""
    stage = (pod["metadata"].get("labels") or {}).get("stratos.io/stage")
    return Outcome(0, "Completed", json.dumps(RESULTS[stage])) if stage in RESULTS else None


def small_job(name: str, pool: str) -> dict[str, Any]:
    """A valid tiny job on the test's node pool: serving off, one tiny student, no retries."""
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": {
            "task": {"builtin": "mahjong", "sampleSize": 6, "trainSize": 24, "testSize": 6},
            "servers": {"nodeSelector": {"stratos.test/pool": pool}, "rule": "paper"},  # node at SelectServer
            "teachers": [copy.deepcopy(TEACHER)],
            "students": [
                {
                    "name": "tiny-a",
                    "model": {"uri": "/models/tiny-a", "parameters": 2e5, "layers": 2, "hiddenSize": 64},
                }
            ],
            "distillation": {"strategy": "injection", "targetSamples": 32, "sequenceLength": 512},
            "serving": {"enabled": False, "engine": "transformers"},
            "retries": {"backoffLimit": 0},
        },
    }


@dataclass(frozen=True)
class Stopped:
    """Accepted by the API server; the operator stops it: ``condition`` gets ``status`` and ``reason``
    and a message containing every one of ``texts``."""

    id: str
    mutate: Mutation
    condition: str
    status: str
    reason: str
    texts: tuple[str, ...]


OPERATOR_STOPS = [
    # Python's regular expressions are not the API server's: only the operator can compile it.
    Stopped(
        "regex-does-not-compile",
        put(
            "spec.task",
            {"builtin": "jsonl", "dataset": {"train": "/d/t.jsonl", "verifier": "regex", "pattern": "(x"}},
        ),
        "Failed",
        "True",
        "InvalidSpec",
        ("spec.task.dataset.pattern", "not a valid regular expression"),
    ),
    # Nested deeply enough to overflow Python's regex compiler (RecursionError, not re.error).
    Stopped(
        "regex-nested-too-deep",
        put(
            "spec.task",
            {
                "builtin": "jsonl",
                "dataset": {
                    "train": "/d/t.jsonl",
                    "verifier": "regex",
                    "pattern": "(" * 500 + "a" + ")" * 500,
                },
            },
        ),
        "Failed",
        "True",
        "InvalidSpec",
        ("spec.task.dataset.pattern", "too complex"),
    ),
    # Valid alone, refused by the API server in the serving Deployment (request above limit), at the end
    # of the pipeline: the job fails and then stays quiet (the check below: no status write, one event).
    Stopped(
        "serving-request-over-limit",
        put(
            "spec.serving",
            {"enabled": True, "engine": "vllm", "resources": {"requests": {"cpu": 4}, "limits": {"cpu": 1}}},
        ),
        "Failed",
        "True",
        "InvalidSpec",
        ("the API server refused the Deployment", "cpu limit"),
    ),
    # The API server compares the integer 0 with the minimum 0.01 as integers, and lets it through.
    Stopped(
        "mfu-integer-zero",
        put("spec.distillation.mfu", 0),
        "Failed",
        "True",
        "InvalidSpec",
        ("spec.distillation.mfu", "greater than or equal to 0.01"),
    ),
    # Objects the operator may not read: the kubelet and the scheduler name them, and so does the job.
    Stopped(
        "api-key-secret-missing",
        put("spec.teachers.0.endpoint.apiKeySecretRef", {"name": "llm-keys", "key": "openai"}),
        "TeacherSelected",
        "Unknown",
        "Evaluating",
        ("waiting on t1:", "CreateContainerConfigError", 'secret "llm-keys" not found'),
    ),
    Stopped(
        "api-key-not-in-secret",
        put("spec.teachers.0.endpoint.apiKeySecretRef", {"name": "other-keys", "key": "openai"}),
        "TeacherSelected",
        "Unknown",
        "Evaluating",
        ("waiting on t1:", "CreateContainerConfigError", "couldn't find key openai in Secret", "/other-keys"),
    ),
    Stopped(
        "claim-missing",
        put("spec.storage", {"pvc": {"claimName": "no-such-claim"}}),
        "TeacherSelected",
        "Unknown",
        "Evaluating",
        ("waiting on t1:", "unschedulable", 'persistentvolumeclaim "no-such-claim" not found'),
    ),
]


def stopped_as_expected(api: Any, namespace: str, case: Stopped) -> dict[str, Any] | None:
    cond = condition(get_dj(api, namespace, case.id), case.condition)
    if (cond.get("status"), cond.get("reason")) != (case.status, case.reason):
        return None
    return cond if all(t in cond.get("message", "") for t in case.texts) else None


def reconcile_errors(operator: OperatorProcess) -> float:
    found = re.findall(r"^stratos_reconcile_errors_total\{[^}]*\} ([0-9.e+]+)$", operator.metrics(), re.M)
    return sum(float(v) for v in found)


def add_pool_node(
    gpu_nodes: Callable[..., dict[str, Any]], kubelet: FakeKubelet | None, name: str, pool: str
) -> None:
    gpu_nodes(
        name,
        labels={"stratos.test/pool": pool, "nvidia.com/gpu.product": "NVIDIA-L4"},
        annotations={"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
    )
    if kubelet is not None:
        kubelet.add_node(name)


def test_specs_the_api_server_accepts_are_stopped_by_the_operator_without_a_loop(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    fake_kubelet.intercept = scripted_success
    add_pool_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    rest(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={"metadata": {"name": "other-keys"}, "stringData": {"anthropic": "sk-ant-not-the-one"}},
    )
    log_start = operator.log_path.stat().st_size
    errors_before = reconcile_errors(operator)
    for case in OPERATOR_STOPS:
        obj = small_job(case.id, namespace)
        case.mutate(obj)
        result = control_plane.kubectl(
            "apply", "-n", namespace, "-f", "-", input=json.dumps(obj), check=False
        )
        assert result.returncode == 0, f"{case.id}: the API server refused it: {result.stderr}"
    apply(control_plane, namespace, small_job("good", namespace))

    for case in OPERATOR_STOPS:
        cond = wait_for(
            lambda case=case: stopped_as_expected(api, namespace, case),
            timeout=60,
            interval=0.3,
            what=f"{case.id}: {case.condition}={case.status} ({case.reason}) naming {case.texts}",
        )
        print(f"{case.id}: {cond['reason']}: {cond['message']}")
        if case.reason == "InvalidSpec":
            status = get_dj(api, namespace, case.id)["status"]
            assert status["phase"] == "Failed" and status["message"] == cond["message"]
            assert condition(get_dj(api, namespace, case.id), "Ready")["reason"] == "InvalidSpec"

    # The operator kept serving the good job beside them, to the end.
    wait_for(
        lambda: get_dj(api, namespace, "good").get("status", {}).get("phase") == "Succeeded",
        timeout=90,
        interval=0.5,
        what="the good job to succeed beside the bad ones",
    )
    # Nothing loops: no status write for several ticks, one InvalidSpec event each, no traceback, no
    # reconcile error.
    versions = {c.id: get_dj(api, namespace, c.id)["metadata"]["resourceVersion"] for c in OPERATOR_STOPS}
    time.sleep(3.0)
    assert versions == {
        c.id: get_dj(api, namespace, c.id)["metadata"]["resourceVersion"] for c in OPERATOR_STOPS
    }
    events = rest(api, "GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    for case in OPERATOR_STOPS:
        invalid = [
            e for e in events if e["involvedObject"].get("name") == case.id and e["reason"] == "InvalidSpec"
        ]
        assert sum(e.get("count", 1) for e in invalid) == (case.reason == "InvalidSpec"), case.id
    with operator.log_path.open("rb") as log:
        log.seek(log_start)
        text = log.read().decode(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert reconcile_errors(operator) == errors_before

    # Fixed specs are picked up: the pattern compiles now, the Secret exists now.
    fixed = json.dumps({"spec": {"task": {"dataset": {"pattern": "ANSWER: (.+)"}}}})
    control_plane.kubectl(
        "patch", "dj", "regex-does-not-compile", "-n", namespace, "--type=merge", "-p", fixed
    )
    wait_for(
        lambda: not condition(get_dj(api, namespace, "regex-does-not-compile"), "Failed"),
        timeout=30,
        what="the fixed job to leave Failed",
    )
    rest(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={"metadata": {"name": "llm-keys"}, "stringData": {"openai": "sk-created-later"}},
    )
    wait_for(
        lambda: (
            condition(get_dj(api, namespace, "api-key-secret-missing"), "TeacherSelected").get("status")
            == "True"
        ),
        timeout=30,
        what="the teacher evaluation to start once its Secret exists",
    )


# ---------------------------------------------------- gaps found by this corpus, since fixed in the operator


def test_a_job_name_too_long_for_a_label_is_refused_naming_the_name(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    add_pool_node(gpu_nodes, None, f"{namespace}-gpu", namespace)
    name = "a-distillation-job-whose-name-is-longer-than-a-kubernetes-label-value"
    assert len(name) > 63
    log_start = operator.log_path.stat().st_size
    result = control_plane.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(small_job(name, namespace)), check=False
    )
    if result.returncode != 0:
        assert "metadata.name" in result.stderr, result.stderr
        return
    cond = wait_for(
        lambda: condition(get_dj(api, namespace, name), "Failed") or None, timeout=8, what="Failed"
    )
    assert cond["reason"] == "InvalidSpec" and "metadata.name" in cond["message"]
    with operator.log_path.open("rb") as log:
        log.seek(log_start)
        assert b"Traceback" not in log.read()


def test_a_toleration_no_pod_can_carry_is_refused_naming_the_field(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    fake_kubelet.intercept = scripted_success
    add_pool_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    job = small_job("tol", namespace)
    job["spec"]["servers"]["tolerations"] = [{"key": "bad key!", "operator": "Exists"}]
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job), check=False)
    if result.returncode != 0:
        assert "spec.servers.tolerations[0].key" in result.stderr, result.stderr
        return
    cond = wait_for(
        lambda: condition(get_dj(api, namespace, "tol"), "Failed") or None, timeout=12, what="Failed"
    )
    assert cond["reason"] == "InvalidSpec" and "tolerations[0].key" in cond["message"], cond


def test_a_negative_resource_quantity_is_refused_naming_the_field(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    fake_kubelet: FakeKubelet,
    api: Any,
) -> None:
    fake_kubelet.intercept = scripted_success
    add_pool_node(gpu_nodes, fake_kubelet, f"{namespace}-gpu", namespace)
    job = small_job("neg", namespace)
    job["spec"]["serving"] = {
        "enabled": True,
        "engine": "transformers",
        "resources": {"limits": {"cpu": "-1"}},
    }
    result = control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(job), check=False)
    if result.returncode != 0:
        assert "spec.serving.resources.limits.cpu" in result.stderr, result.stderr
        return
    cond = wait_for(
        lambda: condition(get_dj(api, namespace, "neg"), "Failed") or None, timeout=25, what="Failed"
    )
    assert "resources" in cond["message"], cond


def test_a_configmap_dataset_is_mounted_into_the_stage_pods(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    add_pool_node(gpu_nodes, None, f"{namespace}-gpu", namespace)
    job = small_job("cm", namespace)
    job["spec"]["task"] = {"builtin": "jsonl", "dataset": {"train": "configmap://train-data/train.jsonl"}}
    apply(control_plane, namespace, job)
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    teacher_eval = wait_for(
        lambda: rest(api, "GET", f"{jobs}/{child(api, namespace, 'cm', 'teacher-eval', 't1')}"),
        timeout=30,
        what="the teacher-eval Job",
    )
    pod = teacher_eval["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volume = volumes[mounts["/etc/stratos/configmaps/train-data"]]
    assert volume["configMap"]["name"] == "train-data"


# ---------------------------------------------------------------------------------------- garbage nodes

# (label or annotation, value, the reason the node is skipped under)
GARBAGE = [
    ("annotation", "stratos.io/hourly-cost", "cheap", reasons.REASON_MALFORMED_COST),
    ("annotation", "stratos.io/hourly-cost", "NaN", reasons.REASON_MALFORMED_COST),
    ("annotation", "stratos.io/hourly-cost", "-0.5", reasons.REASON_MALFORMED_COST),
    ("annotation", "stratos.io/hourly-cost", "1e999", reasons.REASON_MALFORMED_COST),
    ("annotation", "stratos.io/latency-ms", "Infinity", reasons.REASON_MALFORMED_LATENCY),
    ("annotation", "stratos.io/latency-ms", "-5", reasons.REASON_MALFORMED_LATENCY),
    ("annotation", "stratos.io/gpu-count", "-2", reasons.REASON_MALFORMED_GPU_COUNT),
    ("label", "nvidia.com/gpu.count", "1.5", reasons.REASON_MALFORMED_GPU_COUNT),
    ("annotation", "stratos.io/gpu-count", "0x10", reasons.REASON_MALFORMED_GPU_COUNT),
    ("label", "nvidia.com/gpu.product", "NVIDIA-Quantum-9000", reasons.REASON_UNKNOWN_GPU),
    ("label", "nvidia.com/gpu.memory", "nan", reasons.REASON_MALFORMED_GPU_MEMORY),
    ("label", "nvidia.com/gpu.memory", "0", reasons.REASON_MALFORMED_GPU_MEMORY),
]


def garbage_nodes(gpu_nodes: Callable[..., dict[str, Any]], pool: str) -> None:
    for i, (where, key, value, _) in enumerate(GARBAGE):
        labels = {"stratos.test/pool": pool, "nvidia.com/gpu.product": "NVIDIA-L4"}
        annotations = {"stratos.io/hourly-cost": "0.1", "stratos.io/latency-ms": "1"}
        (labels if where == "label" else annotations)[key] = value
        gpu_nodes(f"{pool}-junk-{i}", labels=labels, annotations=annotations)


def test_garbage_nodes_are_skipped_with_their_reasons_counted(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    expected: dict[str, int] = {}
    for *_, reason in GARBAGE:
        expected[reason] = expected.get(reason, 0) + 1
    # Only garbage: no feasible node, every reason in the message; the job waits (and does not fail).
    junk_pool, good_pool = f"{namespace}-junk", f"{namespace}-good"
    garbage_nodes(gpu_nodes, junk_pool)
    apply(control_plane, namespace, small_job("junk", junk_pool))
    counted = [f"{count} {reason}" for reason, count in expected.items()]

    def all_counted() -> dict[str, Any] | None:  # the node index may still be filling up
        cond = condition(get_dj(api, namespace, "junk"), "ServerSelected")
        return cond if all(c in cond.get("message", "") for c in counted) else None

    cond = wait_for(all_counted, timeout=30, what=f"NoFeasibleNode counting {counted}")
    print(cond["message"])
    assert (cond["status"], cond["reason"]) == ("False", "NoFeasibleNode")
    assert get_dj(api, namespace, "junk")["status"]["phase"] == "SelectingServer"

    # Garbage beside a good node: the good one is chosen and the rest counted by reason in status.
    garbage_nodes(gpu_nodes, good_pool)
    add_pool_node(gpu_nodes, None, f"{good_pool}-fine", good_pool)
    apply(control_plane, namespace, small_job("mixed", good_pool))
    cond = wait_for(
        lambda: (
            (c := condition(get_dj(api, namespace, "mixed"), "ServerSelected")).get("status") == "True" and c
        ),
        timeout=30,
        what="mixed: ServerSelected",
    )
    server = get_dj(api, namespace, "mixed")["status"]["server"]
    assert server["node"] == f"{good_pool}-fine"
    rejected = {k: v for k, v in server["rejected"].items() if k != reasons.REASON_SELECTOR}
    assert rejected == expected, server["rejected"]


def test_a_node_claiming_absurdly_many_gpus_is_skipped(
    operator: OperatorProcess,
    control_plane: ControlPlane,
    namespace: str,
    gpu_nodes: Callable[..., dict[str, Any]],
    api: Any,
) -> None:
    add_pool_node(gpu_nodes, None, f"{namespace}-fine", namespace)
    gpu_nodes(
        f"{namespace}-liar",
        labels={
            "stratos.test/pool": namespace,
            "nvidia.com/gpu.product": "NVIDIA-L4",
            "nvidia.com/gpu.count": "100000000000000000000",
        },
        annotations={"stratos.io/hourly-cost": "0.5", "stratos.io/latency-ms": "10"},
        gpus=1,
    )
    apply(control_plane, namespace, small_job("liar", namespace))
    cond = wait_for(
        lambda: condition(get_dj(api, namespace, "liar"), "ServerSelected") or None,
        timeout=10,
        what="decision",
    )
    server = get_dj(api, namespace, "liar")["status"].get("server") or {}
    assert server.get("node") == f"{namespace}-fine", cond
    assert sum(server["rejected"].values()) >= 1
