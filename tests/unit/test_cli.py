"""The `stratos` command: validate and plan (with its picture) on the shipped examples."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from typer.testing import CliRunner

from stratos.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_validate_accepts_the_examples_and_names_the_field_of_a_bad_one(tmp_path: Path) -> None:
    assert runner.invoke(app, ["validate", str(EXAMPLES / "mahjong-injection.yaml")]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    text = (EXAMPLES / "mahjong-local.yaml").read_text()
    bad.write_text(re.sub(r"minAccuracy: [0-9.]+", "minAccuracy: 2", text))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1 and "spec.requirements.minAccuracy" in result.output


def test_plan_decides_the_server_and_draws_the_grid(tmp_path: Path) -> None:
    picture = tmp_path / "plan.svg"
    paper = tmp_path / "paper.yaml"  # the paper's rule: the grid alone picks the node
    text = (EXAMPLES / "mahjong-injection.yaml").read_text()
    paper.write_text(text.replace("  servers:\n", "  servers:\n    rule: paper\n", 1))
    result = runner.invoke(app, ["plan", str(paper), "-o", "json", "--picture", str(picture)])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["server"]["node"] == "hk-4090-a"  # the default inventory in the paper's GPU mix
    svg = ET.fromstring(picture.read_text())
    ns = "{http://www.w3.org/2000/svg}"
    labels = [t.text for t in svg.iter(f"{ns}text")]
    assert "hk-4090-a (chosen)" in labels
    points = [c for c in svg.iter(f"{ns}circle") if c.get("fill") != "white"]
    # 11 candidate nodes (the cordoned one is not a candidate) plus 4 legend markers
    assert len(points) == 11 + 4


def test_plan_with_the_joint_rule_prints_the_pair_table_and_marks_the_chosen_pair(tmp_path: Path) -> None:
    picture = tmp_path / "plan.svg"
    result = runner.invoke(app, ["plan", str(EXAMPLES / "mahjong-injection.yaml"), "--picture", str(picture)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    chosen = next(line for line in lines if line.startswith("*  "))
    node, student = chosen.split()[1:3]
    # Before the probes accuracy counts equal for every student, so the smallest student wins, on the
    # A100 whose bandwidth doubles its decode rate (the job's default weights count throughput 0.3).
    assert (node, student) == ("tk-a100-a", "llama-3-2-1b")
    assert any("U " in line and " vs " in line for line in lines)  # runners-up say what cost them most
    assert any(line.startswith("probe llama-3-1-8b: on hk-l20-a (no feasible pair") for line in lines)
    svg = ET.fromstring(picture.read_text())
    labels = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "tk-a100-a (chosen with llama-3-2-1b)" in labels
