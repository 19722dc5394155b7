"""The generated CRD against a real kube-apiserver: it installs (its CEL rules compile within the cost
budget), the examples apply, defaults match the models, `kubectl explain` shows the descriptions, the
printer columns work, and bad objects are rejected with a message that names the offending field.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from stratos.api import DistillationJob, DistillationJobStatus, format_errors
from stratos.api.crdgen import FILENAME

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / FILENAME
EXAMPLES = REPO / "examples"


def example_jobs() -> list[dict[str, Any]]:
    """Every DistillationJob document under examples/ (other kinds, e.g. Node inventories, skipped)."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [
            d
            for d in yaml.safe_load_all(path.read_text())
            if isinstance(d, dict) and d.get("kind") == "DistillationJob"
        ]
    return docs


def without_empties(value: Any) -> Any:
    """`value` with empty dicts and lists removed, recursively."""
    if isinstance(value, dict):
        pruned = {k: without_empties(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    if isinstance(value, list):
        return [without_empties(v) for v in value]
    return value


def valid_job(name: str = "bad") -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": {
            "teachers": [{"name": "t1", "endpoint": {"baseURL": "http://teacher:8000/v1", "model": "m"}}],
            "students": [{"name": "s1", "model": {"uri": "hf://org/s1", "parameters": 1.0e9}}],
        },
    }


def kubectl_apply(control_plane: Any, namespace: str, obj: dict[str, Any], *extra: str) -> Any:
    return control_plane.kubectl(
        "apply", "--validate=strict", "-n", namespace, *extra, "-f", "-", input=json.dumps(obj), check=False
    )


# ------------------------------------------------------------------------------------ bad objects


@dataclass(frozen=True)
class Bad:
    """A broken object: how to break a valid one, and what the API server's error must contain."""

    id: str
    mutate: Callable[[dict[str, Any]], None]
    field: str  # the offending field as the API server names it
    text: str  # more of the API server's message
    py: str | None = None  # what the models' error must contain (default: text)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        node: Any = obj
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[keys[-1]] = value

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for key in parents:
            node = node[key]
        del node[last]

    return mutate


def _duplicate_teacher(obj: dict[str, Any]) -> None:
    obj["spec"]["teachers"].append(copy.deepcopy(obj["spec"]["teachers"][0]))


def _many_teachers(obj: dict[str, Any]) -> None:
    t = obj["spec"]["teachers"][0]
    obj["spec"]["teachers"] = [{**t, "name": f"t{i}"} for i in range(17)]


BAD = [
    Bad(
        "wrong-type",
        _set("spec.task.sampleSize", "fifty"),
        "spec.task.sampleSize",
        "must be of type integer",
        py="spec.task.sampleSize",
    ),
    Bad(
        "out-of-range",
        _set("spec.requirements.minAccuracy", 1.5),
        "spec.requirements.minAccuracy",
        "less than or equal to 1",
        py="spec.requirements.minAccuracy",
    ),
    Bad(
        "negative-cost",
        _set("spec.teachers.0.costPerMillionTokens", -1),
        "spec.teachers[0].costPerMillionTokens",
        "greater than or equal to 0",
        py="spec.teachers[0].costPerMillionTokens",
    ),
    Bad(
        "zero-parameters",
        _set("spec.students.0.model.parameters", 0),
        "spec.students[0].model.parameters",
        "greater than 0",
        py="spec.students[0].model.parameters",
    ),
    Bad(
        "unknown-enum",
        _set("spec.distillation.strategy", "magic"),
        "spec.distillation.strategy",
        "Unsupported value",
        py="spec.distillation.strategy",
    ),
    Bad("duplicate-teachers", _duplicate_teacher, "spec.teachers", "teacher names must be unique"),
    Bad(
        "too-many-teachers", _many_teachers, "spec.teachers", "must have at most 16 items", py="spec.teachers"
    ),
    Bad(
        "jsonl-without-dataset",
        _set("spec.task.builtin", "jsonl"),
        "spec.task.dataset",
        "dataset is required when builtin is jsonl",
    ),
    Bad(
        "regex-without-pattern",
        _set("spec.task", {"builtin": "jsonl", "dataset": {"train": "/d/train.jsonl", "verifier": "regex"}}),
        "spec.task.dataset.pattern",
        "pattern is required when verifier is regex",
    ),
    Bad(
        "injection-with-grpo",
        _set("spec.distillation", {"strategy": "injection", "algorithm": "grpo"}),
        "spec.distillation.algorithm",
        "knowledge injection trains with sft-lora only",
    ),
    Bad(
        "zero-weights",
        _set(
            "spec.requirements.weights",
            {"accuracy": 0, "trainingTime": 0, "throughput": 0, "latency": 0, "cost": 0},
        ),
        "spec.requirements.weights",
        "at least one of accuracy, trainingTime, throughput, latency, cost",
    ),
    Bad(
        "pvc-and-uri",
        _set("spec.storage", {"pvc": {"claimName": "data"}, "uri": "s3://bucket/x"}),
        "spec.storage",
        "exactly one of pvc or uri must be set",
    ),
    Bad(
        "object-store-uri",
        _set("spec.storage", {"uri": "s3://bucket/prefix"}),
        "spec.storage.uri",
        "storage.uri is not supported yet",
    ),
    Bad(
        "reserved-env",
        _set("spec.pods", {"env": [{"name": "STRATOS_STORAGE_DIR", "value": "/x"}]}),
        "spec.pods.env[0].name",
        "are the operator's own",
    ),
    Bad(
        "env-from-nothing",
        _set("spec.pods", {"envFrom": [{"prefix": "A_"}]}),
        "spec.pods.envFrom[0]",
        "exactly one of secretRef or configMapRef",
    ),
    Bad(
        "neither-pvc-nor-uri",
        _set("spec.storage", {}),
        "spec.storage",
        "exactly one of pvc or uri must be set",
    ),
    Bad(
        "oversized-name",
        _set("spec.teachers.0.name", "t" * 41),
        "spec.teachers[0].name",
        "Too long",
        py="spec.teachers[0].name",
    ),
    Bad(
        "not-a-dns-label",
        _set("spec.students.0.name", "Llama_3"),
        "spec.students[0].name",
        "should match",
        py="spec.students[0].name",
    ),
    Bad(
        "oversized-uri",
        _set("spec.students.0.model.uri", "hf://" + "x" * 2048),
        "spec.students[0].model.uri",
        "Too long",
        py="spec.students[0].model.uri",
    ),
    Bad(
        "not-http",
        _set("spec.teachers.0.endpoint.baseURL", "ftp://teacher/v1"),
        "spec.teachers[0].endpoint.baseURL",
        "should match",
        py="spec.teachers[0].endpoint.baseURL",
    ),
    Bad("missing-teachers", _delete("spec.teachers"), "spec.teachers", "Required value", py="spec.teachers"),
    Bad("missing-spec", _delete("spec"), "spec", "Required value", py="spec: Field required"),
    Bad(
        "unknown-field",
        _set("spec.task.sampelSize", 10),
        "spec.task.sampelSize",
        "unknown field",
        py="spec.task.sampelSize",
    ),
    Bad(
        "bad-duration",
        _set("spec.requirements.maxTrainingTime", "2 hours"),
        "spec.requirements.maxTrainingTime",
        "must be a duration such as 90m, 2h",
        py="spec.requirements.maxTrainingTime",
    ),
    Bad(
        "zero-duration",
        _set("spec.requirements.maxTrainingTime", "0h"),
        "spec.requirements.maxTrainingTime",
        "duration must be greater than zero",
    ),
    Bad(
        "exists-with-value",
        _set("spec.servers.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]),
        "spec.servers.tolerations[0].value",
        "value must be empty when operator is Exists",
    ),
    Bad(
        "sub-path-escapes",
        _set("spec.storage", {"pvc": {"claimName": "data", "subPath": "a/../../etc"}}),
        "spec.storage.pvc.subPath",
        "subPath must be a relative path without '..'",
    ),
    Bad(
        "bad-quantity",
        _set("spec.serving.resources", {"limits": {"cpu": "lots"}}),
        "spec.serving.resources.limits.cpu",
        "should match",
        py="spec.serving.resources.limits.cpu",
    ),
]


def broken(case: Bad) -> dict[str, Any]:
    obj = valid_job(f"bad-{case.id}")
    case.mutate(obj)
    return obj


def test_there_are_enough_bad_cases() -> None:
    assert len(BAD) >= 12 and len({c.id for c in BAD}) == len(BAD)


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_models_reject_the_same_objects(case: Bad) -> None:
    """The operator and the local runner refuse exactly what the API server refuses."""
    with pytest.raises(ValidationError) as info:
        DistillationJob.from_body(broken(case))
    assert (case.py or case.text) in format_errors(info.value)


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_api_server_rejects_bad_objects_naming_the_field(
    control_plane: Any, crd_installed: Path, namespace: str, case: Bad
) -> None:
    result = kubectl_apply(control_plane, namespace, broken(case))
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert case.field in result.stderr and case.text in result.stderr, result.stderr


# ------------------------------------------------------------------------------- good objects

GOOD: dict[str, Callable[[dict[str, Any]], None]] = {
    # CEL sees JSON integers in `type: number` fields as doubles; int + double must not be an error.
    "integer-weights": _set("spec.requirements.weights", {"accuracy": 1, "trainingTime": 0, "throughput": 0}),
    "tolerate-everything": _set("spec.servers.tolerations", [{"operator": "Exists"}]),
    "pod-options": _set(
        "spec.pods",
        {
            "env": [
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                {"name": "MODE", "value": "fast"},
            ],
            "envFrom": [{"secretRef": {"name": "aws-credentials"}}, {"configMapRef": {"name": "c"}}],
            "serviceAccountName": "trainer",
            "imagePullSecrets": [{"name": "registry"}],
            "priorityClassName": "batch-low",
            "labels": {"example.com/team": "ml"},
            "annotations": {"note": "anything goes here"},
        },
    ),
    "jsonl-regex": _set(
        "spec.task",
        {
            "builtin": "jsonl",
            "dataset": {
                "train": "configmap://data/train.jsonl",
                "verifier": "regex",
                "pattern": "ANSWER: (\\d+)",
            },
        },
    ),
    "injection-sft": _set("spec.distillation", {"strategy": "injection", "algorithm": "sft-lora"}),
    "quantities": _set(
        "spec.serving.resources", {"requests": {"cpu": 2, "memory": "16Gi"}, "limits": {"cpu": "500m"}}
    ),
    "fractional-duration": _set("spec.requirements.maxTrainingTime", "1.5h"),
    "sixteen-students": lambda obj: obj["spec"].update(
        students=[{**obj["spec"]["students"][0], "name": f"s{i}"} for i in range(16)]
    ),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_edge_cases_that_are_valid_pass_both_checks(
    control_plane: Any, crd_installed: Path, namespace: str, name: str
) -> None:
    obj = valid_job(f"good-{name}")
    GOOD[name](obj)
    DistillationJob.from_body(obj)
    result = kubectl_apply(control_plane, namespace, obj)
    assert result.returncode == 0, result.stderr


def test_crd_installs_with_its_cel_rules(control_plane: Any, crd_installed: Path) -> None:
    """Re-applying is a no-op; an uncompilable or too-expensive CEL rule would fail the apply."""
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    crd = json.loads(control_plane.kubectl("get", "crd", "distillationjobs.stratos.io", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"
    assert crd["status"]["acceptedNames"]["shortNames"] == ["dj"]


def test_examples_apply_and_the_server_defaults_like_the_models(
    control_plane: Any, crd_installed: Path, namespace: str
) -> None:
    jobs = example_jobs()
    assert len(jobs) >= 3
    for doc in jobs:
        result = kubectl_apply(control_plane, namespace, doc)
        assert result.returncode == 0, f"{doc['metadata']['name']}: {result.stderr}"
        stored = json.loads(
            control_plane.kubectl("get", "dj", doc["metadata"]["name"], "-n", namespace, "-o", "json").stdout
        )
        # The API server filled in the CRD's defaults; the models fill in theirs; they must agree
        # (empty maps and lists are the models' defaults but not written by the server).
        # Quantities are compared by the second assertion only: `cpu: 2` stays an integer on the
        # server and becomes "2" in the models.
        expected = DistillationJob.from_body(doc).spec
        server_view, model_view = without_empties(stored["spec"]), without_empties(expected.to_api())
        for view in (server_view, model_view):
            view.get("serving", {}).pop("resources", None)
        assert server_view == model_view, doc["metadata"]["name"]
        assert DistillationJob.from_body(stored).spec == expected


def test_kubectl_explain_shows_the_field_descriptions(control_plane: Any, crd_installed: Path) -> None:
    deadline = time.monotonic() + 60
    while True:  # the CRD's OpenAPI is published a moment after it is Established
        result = control_plane.kubectl("explain", "dj.spec.requirements.minAccuracy", check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert result.returncode == 0, result.stderr
    assert "minimum accuracy (0..1)" in result.stdout and "number" in result.stdout
    spec = control_plane.kubectl("explain", "dj.spec.teachers.endpoint").stdout
    assert "baseURL" in spec and "apiKeySecretRef" in spec and "OpenAI-compatible" in spec


def test_status_from_the_models_survives_the_api_server_and_fills_the_columns(
    control_plane: Any, crd_installed: Path, namespace: str
) -> None:
    """Nothing the models can write is pruned, and `kubectl get dj` shows the decision columns."""
    job = valid_job("columns")
    assert kubectl_apply(control_plane, namespace, job).returncode == 0
    status = DistillationJobStatus.model_validate(
        {
            "observedGeneration": 1,
            "phase": "Serving",
            "stage": "serve",
            "message": "serving llama",
            "startTime": "2025-01-31T12:00:00Z",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Serving",
                    "message": "up",
                    "lastTransitionTime": "2025-01-31T12:00:00Z",
                    "observedGeneration": 1,
                },
            ],
            "server": {
                "node": "hk-4090-a",
                "gpu": {"model": "RTX 4090", "count": 2, "memoryGib": 24.0},
                "hourlyCost": 0.7,
                "latencyMs": 18.0,
                "region": "ap-east-1",
                "gridSize": 4,
                "costWindow": 0.2,
                "cell": [0, 0, 1],
                "paretoCells": [[0, 0, 1], [1, 0, 0]],
                "runnersUp": [
                    {
                        "node": "sg-h20",
                        "gpu": {"model": "H20", "count": 1, "memoryGib": 96.0},
                        "hourlyCost": 1.2,
                        "latencyMs": 45.0,
                        "cell": [1, 0, 0],
                        "distance": 0.4,
                        "reason": "costlier cell",
                    }
                ],
                "candidates": 6,
                "feasible": 4,
                "rejected": {"no GPU": 2},
                "reason": "cheapest PFG cell",
            },
            "teacher": {
                "selected": "t1",
                "reason": "only teacher",
                "candidates": [
                    {
                        "name": "t1",
                        "accuracy": 0.7,
                        "samples": 50,
                        "correct": 35,
                        "promptTokens": 1000,
                        "completionTokens": 2000,
                        "costUsd": 0.02,
                        "verdict": "selected",
                    }
                ],
            },
            "strategy": {"selected": "alignment", "algorithm": "sft-lora", "reason": "teacher meets A"},
            "student": {
                "selected": "s1",
                "reason": "highest M",
                "candidates": [
                    {
                        "name": "s1",
                        "parameters": 1.0e9,
                        "accuracy": 0.6,
                        "trainingTimeHours": 0.5,
                        "tokensPerSecond": 120.0,
                        "trainingMemoryGib": 9.5,
                        "servingMemoryGib": 3.0,
                        "score": 0.8,
                        "verdict": "selected",
                    }
                ],
            },
            "data": {"uri": "/data/train.jsonl", "samples": 100, "real": 50, "synthetic": 60, "rejected": 10},
            "training": {
                "student": "s1",
                "algorithm": "sft-lora",
                "attempt": 1,
                "adapterUri": "/data/adapter",
                "steps": 25,
                "loss": 0.9,
                "durationSeconds": 60.0,
            },
            "evaluation": {
                "student": "s1",
                "accuracy": 0.72,
                "samples": 100,
                "correct": 72,
                "passed": True,
                "attempts": [{"student": "s1", "accuracy": 0.72, "passed": True}],
            },
            "endpoint": {"url": "http://columns.ns.svc:8000/v1", "model": "s1", "ready": True},
            "cost": {"estimateUsd": 1.5, "spentUsd": 1.0, "teacherTokens": 3000, "gpuHours": 0.6},
        }
    )
    patch = json.dumps({"status": status.to_api()})
    control_plane.kubectl(
        "patch", "dj", "columns", "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )
    stored = json.loads(control_plane.kubectl("get", "dj", "columns", "-n", namespace, "-o", "json").stdout)
    assert stored["status"] == status.to_api()
    assert DistillationJob.from_body(stored).status == status

    table = control_plane.kubectl("get", "dj", "columns", "-n", namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "PHASE",
        "READY",
        "NODE",
        "GPU",
        "TEACHER",
        "STUDENT",
        "STRATEGY",
        "ACCURACY",
        "AGE",
    ]
    assert table[1].split()[:10] == [
        "columns",
        "Serving",
        "True",
        "hk-4090-a",
        "RTX",
        "4090",
        "t1",
        "s1",
        "alignment",
        "0.72",
    ]
    wide = control_plane.kubectl("get", "stratos", "-n", namespace, "-o", "wide").stdout
    assert "ENDPOINT" in wide and "http://columns.ns.svc:8000/v1" in wide


def test_status_is_a_subresource(control_plane: Any, crd_installed: Path, namespace: str) -> None:
    """Writes to the main resource do not change status (the operator owns it, users own spec)."""
    job = valid_job("subresource")
    job["status"] = {"phase": "Serving"}
    assert kubectl_apply(control_plane, namespace, job).returncode == 0
    stored = json.loads(
        control_plane.kubectl("get", "dj", "subresource", "-n", namespace, "-o", "json").stdout
    )
    assert "phase" not in stored.get("status", {})
