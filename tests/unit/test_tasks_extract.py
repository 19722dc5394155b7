"""Answer extraction on outputs shaped like what real models write."""

from __future__ import annotations

from decimal import Decimal

import pytest

from stratos.tasks.extract import (
    answer_span,
    extract_number,
    format_number,
    normalise_text,
    numbers_equal,
    parse_number,
    strip_final_answer,
    strip_thinking,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 36 - 9 = 27 pencils.\nThe answer is 27.", "27"),
        ("Total: 8 + 6 = 14\n#### 14", "14"),
        ("So the final answer is $1,234.50.", "1234.5"),
        ("**Answer:** 42 apples", "42"),
        ("Thus the answer is \\boxed{18}.", "18"),
        ("\\boxed{\\text{1,500}}", "1500"),
        ("The answer is 42. This is because 6 times 7 is 42, and 7 + 1 = 8.", "42"),
        ("The answer is: 5 + 3 = 8", "8"),
        ("#### Step 1\nAdd them: 3 + 4 = 7.\n#### Step 2\nDouble: 14.", "14"),
        ("<think>Maybe 12? No, 13.</think>\nThe answer is 13.", "13"),
        ("Answer: 18.0", "18"),
        ("The answer is -7 degrees.", "-7"),
        ("The answer is 3/4 of a cup.", "0.75"),
        ("After all that, she keeps 9 eggs.", "9"),
        ("The answer is 25%.", "25"),
        ("I am not sure.", None),
        ("", None),
    ],
)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("Reasoning...\nThe answer is Paris.", "Paris"),
        ("Reasoning...\nFinal Answer: **Paris**", "Paris"),
        ("The answer is Paris, because it is the capital.", "Paris"),
        ("Long reasoning.\nParis", "Paris"),
        ('The answer would be: "blue"', "blue"),
        ("#### Paris", "Paris"),
        ("   ", None),
    ],
)
def test_answer_span(text: str, span: str | None) -> None:
    assert answer_span(text) == span


def test_last_marker_wins() -> None:
    assert extract_number("The answer is 5.\nWait, recheck: 6.\n#### 6") == "6"
    assert extract_number("#### 5\nOn reflection the answer is 6.") == "6"


def test_numbers() -> None:
    assert parse_number("$1,234") == Decimal("1234")
    assert parse_number("1 234 dollars") == Decimal("1234")
    assert parse_number("−3") == Decimal("-3")
    assert parse_number("no digits") is None
    assert format_number(Decimal("18.000")) == "18"
    assert format_number(Decimal("0.50")) == "0.5"
    assert numbers_equal("1,234", "1234.0")
    assert numbers_equal("$30", "30 dollars")
    assert not numbers_equal("30", "31")
    assert not numbers_equal(None, "1") and not numbers_equal("x", "1")


def test_strip_thinking_and_final_answer() -> None:
    assert strip_thinking("<think>hmm</think>\n\nDone: 4") == "Done: 4"
    assert strip_thinking("<think>only thinking</think>") == "<think>only thinking</think>"
    reasoning = "Step 1: 3 * 12 = 36.\nStep 2: 36 - 9 = 27.\nThe answer is 27.\n#### 27\n"
    assert strip_final_answer(reasoning) == "Step 1: 3 * 12 = 36.\nStep 2: 36 - 9 = 27."
    assert strip_final_answer("Therefore \\boxed{4}") == ""


def test_normalise_text() -> None:
    assert normalise_text("  The   Eiffel\nTower. ") == "the eiffel tower"
    assert normalise_text('"Paris"') == "paris"
