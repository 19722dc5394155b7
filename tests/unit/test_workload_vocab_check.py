"""The white-box KD vocabulary check on tiny models: configs and tokenizers only, a finding not a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")

from stratos.workloads import vocab_check
from support.tiny_models import tiny_model


def run_check(
    tmp_path: Path, students: list[dict[str, str]], teachers: list[dict[str, str]]
) -> tuple[int, Any]:
    config, result = tmp_path / "config.json", tmp_path / "result.json"
    config.write_text(json.dumps({"students": students, "teachers": teachers}))
    code = vocab_check.main(["--config", str(config), "--result", str(result)])
    return code, json.loads(result.read_text())


def test_same_family_models_share_one_vocabulary(tmp_path: Path) -> None:
    student, teacher = tiny_model(), tiny_model(seed=1, hidden_size=96)  # other weights, same tokenizer
    code, result = run_check(
        tmp_path, [{"name": "s", "uri": str(student)}], [{"name": "t", "uri": str(teacher)}]
    )
    assert code == 0 and result == {"ok": True, "shared": True, "checked": 1, "mismatches": []}


def test_every_pair_is_checked_and_a_mismatch_is_reported_as_a_finding(tmp_path: Path) -> None:
    same, other = str(tiny_model()), str(tiny_model(seed=1, vocab_size=800))
    students = [{"name": "s1", "uri": same}, {"name": "s2", "uri": other}]
    code, result = run_check(tmp_path, students, [{"name": "t", "uri": same}])
    assert code == 0 and result["ok"] is True and result["shared"] is False and result["checked"] == 2
    [line] = result["mismatches"]
    assert line.startswith("teacher t / student s2: ") and "800 logits" in line and "1024 logits" in line


def test_a_model_that_cannot_be_read_fails_the_stage(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere")
    code, result = run_check(
        tmp_path, [{"name": "s", "uri": str(tiny_model())}], [{"name": "t", "uri": missing}]
    )
    assert code == 1 and result["ok"] is False and result["kind"] == "ModelUnavailable"
    assert "no model directory" in result["error"]
