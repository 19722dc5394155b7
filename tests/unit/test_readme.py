"""The README's API reference is generated from the models; it must not drift from them."""

from __future__ import annotations

import re
from pathlib import Path

from stratos.api.reference import END, START, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_api_reference_is_fresh() -> None:
    text = README.read_text()
    block = text[text.index(START) : text.index(END) + len(END)]
    assert block == render(), "README.md's API reference is stale: run `make docs`"


def test_every_spec_field_is_documented_in_the_readme() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `spec.")]
    assert len(rows) > 50
    cells = [re.split(r"(?<!\\)\|", line) for line in rows]
    assert all(len(c) == 7 for c in cells), "a table row with an unescaped pipe"
    assert all(c[5].strip() for c in cells), "a field without a description"
