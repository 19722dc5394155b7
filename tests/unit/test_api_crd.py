"""The generated CRD: up to date, structural, described, bounded; and the examples fit the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stratos.api import DistillationJob, base, candidates, placement, spec, types
from stratos.api.crdgen import FILENAME, PRINTER_COLUMNS, SchemaError, build_crd, main, render, to_structural

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / FILENAME
EXAMPLES = REPO / "examples"


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node`, with a readable path (`.spec.teachers[].name`)."""
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_committed_crd_is_up_to_date() -> None:
    assert CRD_PATH.exists(), f"{CRD_PATH} is missing; run `make crds`"
    assert CRD_PATH.read_text() == render(), (
        f"{CRD_PATH.relative_to(REPO)} is stale: the API models changed. Run `make crds` "
        "(python -m stratos.api.crdgen --out crds) and commit the result."
    )


def test_generation_is_deterministic() -> None:
    assert render() == render()
    assert render().startswith("# Generated from the pydantic models")


def test_check_mode_reports_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--check"]) == 1  # missing counts as stale
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--out", str(tmp_path), "--check"]) == 0
    stale = tmp_path / FILENAME
    stale.write_text(stale.read_text().replace("minAccuracy", "minAccuracyOld"))
    assert main(["--out", str(tmp_path), "--check"]) == 1
    captured = capsys.readouterr()
    assert "+                  minAccuracy:" in captured.out and "make crds" in captured.err


def test_names_scope_and_subresources(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "distillationjobs.stratos.io"
    names = crd["spec"]["names"]
    assert names == {
        "kind": "DistillationJob",
        "listKind": "DistillationJobList",
        "plural": "distillationjobs",
        "singular": "distillationjob",
        "shortNames": ["dj"],
        "categories": ["stratos"],
    }
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert columns == PRINTER_COLUMNS
    assert [(c["name"], c["jsonPath"]) for c in columns] == [
        ("Phase", ".status.phase"),
        ("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        ("Node", ".status.server.node"),
        ("GPU", ".status.server.gpu.model"),
        ("Teacher", ".status.teacher.selected"),
        ("Student", ".status.student.selected"),
        ("Strategy", ".status.strategy.selected"),
        ("Accuracy", ".status.evaluation.accuracy"),
        ("Age", ".metadata.creationTimestamp"),
        ("Endpoint", ".status.endpoint.url"),
    ]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Accuracy"]["type"] == "number" and by_name["Age"]["type"] == "date"
    assert by_name["Endpoint"]["priority"] == 1
    assert all("priority" not in c for c in columns if c["name"] != "Endpoint")


def test_every_printer_column_path_exists_in_the_schema(schema: dict[str, Any]) -> None:
    paths = {path for path, _ in walk(schema)}
    for column in PRINTER_COLUMNS:
        # The Ready column filters the conditions list by type (a JSONPath filter expression).
        path = column["jsonPath"].replace('[?(@.type=="Ready")]', "[]")
        if path != ".metadata.creationTimestamp":
            assert path in paths, column


def test_spec_is_required_and_status_optional(schema: dict[str, Any]) -> None:
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert sorted(schema["properties"]["spec"]["required"]) == ["students", "teachers"]
    assert "required" not in schema["properties"]["status"]


def test_every_property_has_a_description(schema: dict[str, Any]) -> None:
    missing = [
        path
        for path, node in walk(schema)
        if path and path != ".metadata" and not path.endswith(("[]", "{}")) and not node.get("description")
    ]
    assert not missing, f"properties without a description: {missing}"


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    forbidden = {
        "$ref",
        "$defs",
        "title",
        "const",
        "nullable",
        "propertyNames",
        "uniqueItems",
        "oneOf",
        "allOf",
    }
    for path, node in walk(schema):
        assert not forbidden & set(node), f"{path}: {sorted(forbidden & set(node))}"
        if node.get("x-kubernetes-int-or-string"):
            assert node.get("anyOf") == [{"type": "integer"}, {"type": "string"}], path
            continue
        assert "anyOf" not in node, path
        assert node.get("type") in {"object", "array", "string", "integer", "number", "boolean"}, path
        assert "default" not in node or node["default"] is not None, path
        if "properties" in node:
            assert node["type"] == "object" and "additionalProperties" not in node, path
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path


def test_defaults_are_valid_for_their_nodes(schema: dict[str, Any]) -> None:
    kinds: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
    }
    for path, node in walk(schema):
        if "default" not in node:
            continue
        default = node["default"]
        assert isinstance(default, kinds[node["type"]]), path
        if "enum" in node:
            assert default in node["enum"], path
        if isinstance(default, int | float) and not isinstance(default, bool):
            assert node.get("minimum", default) <= default <= node.get("maximum", default), path
        if isinstance(default, dict):
            # The API server checks CEL rules against a default as written, without filling in the
            # nested defaults: object defaults must therefore be spelled out in full.
            for key, child in node.get("properties", {}).items():
                assert "default" not in child or key in default, f"{path}.{key} missing from {path}'s default"
    assert not any("default" in node for _, node in walk(schema["properties"]["status"])), (
        "status has defaults"
    )


def test_spec_values_are_bounded_for_the_cel_cost_estimator(schema: dict[str, Any]) -> None:
    unbounded = []
    for path, node in walk(schema["properties"]["spec"], ".spec"):
        kind = str(node.get("type"))
        bounded = {
            "string": "maxLength" in node or "enum" in node,
            "array": "maxItems" in node,
            "object": "additionalProperties" not in node or "maxProperties" in node,
        }.get(kind, True)
        if not bounded:
            unbounded.append(path)
    assert not unbounded, f"unbounded in spec: {unbounded}"


def _declared_rules() -> list[base.CelRule]:
    modules = (spec, placement, candidates, types)
    return [v for m in modules for v in vars(m).values() if isinstance(v, base.CelRule)]


def test_every_cel_rule_is_in_the_crd(schema: dict[str, Any]) -> None:
    in_crd = [rule for _, node in walk(schema) for rule in node.get("x-kubernetes-validations", [])]
    declared = _declared_rules()
    assert len(declared) >= 10
    for rule in declared:
        assert rule.to_schema() in in_crd, rule
    for rule in in_crd:
        assert rule["message"] and rule["rule"]


def test_structural_translation_rejects_what_the_api_server_would() -> None:
    with pytest.raises(SchemaError, match="union"):
        to_structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})
    with pytest.raises(SchemaError, match="propertyNames"):
        to_structural({"type": "object", "propertyNames": {"maxLength": 3}}, {})
    with pytest.raises(SchemaError, match="tuples"):
        to_structural({"type": "array", "prefixItems": [{"type": "string"}]}, {})
    assert to_structural(
        {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}], "default": None},
        {"A": {"type": "string", "title": "A"}},
    ) == {"type": "string"}
    assert to_structural({"type": "number", "exclusiveMinimum": 0}, {}) == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
    }


# -------------------------------------------------------------------------------------- examples


def _example_jobs() -> list[tuple[str, dict[str, Any]]]:
    jobs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "DistillationJob":
                jobs.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return jobs


def test_the_shipped_examples_exist() -> None:
    names = {p.name for p in EXAMPLES.glob("*.yaml")}
    assert {"mahjong-injection.yaml", "gsm8k-alignment.yaml", "jsonl-custom.yaml"} <= names


@pytest.mark.parametrize(("name", "doc"), _example_jobs(), ids=[n for n, _ in _example_jobs()])
def test_example_validates_against_the_models(name: str, doc: dict[str, Any]) -> None:
    job = DistillationJob.from_body(doc)
    assert job.name and job.status.phase is None


def test_examples_carry_the_papers_numbers() -> None:
    jobs = {n.split(":")[0]: DistillationJob.from_body(d) for n, d in _example_jobs()}
    mahjong = jobs["mahjong-injection.yaml"].spec
    assert mahjong.requirements.min_accuracy == 0.15
    assert mahjong.distillation.strategy == "injection" and mahjong.distillation.algorithm == "sft-lora"
    assert (mahjong.task.builtin, mahjong.task.train_size, mahjong.task.test_size) == ("mahjong", 4260, 100)
    gsm8k = jobs["gsm8k-alignment.yaml"].spec
    assert gsm8k.requirements.min_accuracy == 0.65 and gsm8k.distillation.target_samples == 10000
    assert gsm8k.requirements.probe_margin == 0.10 and gsm8k.servers.rule == "joint"
    assert [t.name for t in gsm8k.teachers] == ["gpt-4o", "qwen-72b", "llama-405b"]
    assert all(t.endpoint.api_key_secret_ref is not None for t in gsm8k.teachers)
    assert [s.model.parameters for s in gsm8k.students] == [1.24e9, 1.54e9, 3.21e9, 8.03e9]
    custom = jobs["jsonl-custom.yaml"].spec
    assert custom.task.builtin == "jsonl" and custom.task.dataset is not None


def test_example_numbers_are_numbers_for_every_yaml_reader() -> None:
    """PyYAML reads `3.2e9` as a string (YAML 1.1); the API server would reject it from a client."""
    for name, doc in _example_jobs():
        for student in doc["spec"]["students"]:
            assert isinstance(student["model"]["parameters"], int | float), name
