"""GSM8K and user JSONL tasks: loading, numeric/exact/set/regex verification, holdout splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stratos.data.sources import DataSourceError
from stratos.tasks.base import Sample
from stratos.tasks.gsm8k import SAMPLE_URI, GSM8KTask
from stratos.tasks.jsonl import JsonlTask, set_items


def _write(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_bundled_gsm8k_sample_loads_with_holdout() -> None:
    task = GSM8KTask(train_uri=SAMPLE_URI, test_uri=None, seed=0)
    train, test = task.load("train"), task.load("test")
    assert len(train) + len(test) == 20 and len(test) == 2
    assert not {s.id for s in train} & {s.id for s in test}
    first = GSM8KTask(train_uri=SAMPLE_URI, test_uri=None).load("train")[0]
    assert first.answer == "27" and "####" not in first.meta["solution"]
    assert "<<3*12=36>>" in first.meta["solution"]
    # The holdout is seeded: same seed, same split; another seed, another split.
    assert [s.id for s in GSM8KTask(train_uri=SAMPLE_URI, test_uri=None, seed=0).load("test")] == [
        s.id for s in test
    ]


def test_gsm8k_answers_are_canonical_numbers(tmp_path: Path) -> None:
    uri = _write(
        tmp_path / "g.jsonl",
        [
            {"question": "q1", "answer": "work\n#### 1,200"},
            {"question": "q2", "answer": "#### 3.50"},
        ],
    )
    task = GSM8KTask(train_uri=uri, test_uri=uri)
    assert [s.answer for s in task.load("test")] == ["1200", "3.5"]
    s = task.load("train")[0]
    assert task.score("... so it costs $1,200.00 in total.\nThe answer is $1,200.", s)
    assert task.verify("1200.0", s) and task.verify("1,200", s)
    assert not task.verify("120", s) and not task.verify(None, s)


def test_gsm8k_bad_rows_name_the_line(tmp_path: Path) -> None:
    uri = _write(tmp_path / "g.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q"}])
    with pytest.raises(DataSourceError, match=r"line 2: row has no field 'answer'"):
        GSM8KTask(train_uri=uri, test_uri=None).load("train")
    uri = _write(tmp_path / "h.jsonl", [{"question": "q", "answer": "#### many"}])
    with pytest.raises(DataSourceError, match=r"line 1: answer 'many' has no number"):
        GSM8KTask(train_uri=uri, test_uri=None).load("train")


def test_gsm8k_prompting() -> None:
    task = GSM8KTask(train_uri=SAMPLE_URI, test_uri=None)
    s = task.load("train")[0]
    msgs = task.messages(s, reasoning="3 packs of 12 is 36.\n36 - 9 = 27.\nThe answer is 27.")
    assert "36 - 9 = 27." in msgs[1]["content"] and "The answer is 27." not in msgs[1]["content"]
    assert "The answer is 27" in task.reverse_messages(s)[1]["content"]
    target = task.completion(s, "3 * 12 = 36\n36 - 9 = 27\n#### 27")
    assert target.endswith("36 - 9 = 27\n\nThe answer is 27.")
    assert task.completion(s) == "The answer is 27."


def test_jsonl_exact_with_custom_fields(tmp_path: Path) -> None:
    uri = _write(tmp_path / "d.jsonl", [{"q": "Capital of France?", "meta": {"a": "Paris"}}] * 3)
    task = JsonlTask(train_uri=uri, test_uri=uri, prompt_field="q", answer_field="meta.a")
    s = task.load("train")[0]
    assert s.question == "Capital of France?" and s.answer == "Paris" and s.id == "jsonl-train-00000"
    assert task.score("It is in Europe.\nThe answer is paris.", s)
    assert task.score("Final answer: **The   PARIS**".replace("The   ", ""), s)
    assert not task.score("The answer is Lyon.", s)
    with pytest.raises(DataSourceError, match=r"line 1: row has no field 'prompt'"):
        JsonlTask(train_uri=uri).load("train")


def test_jsonl_numeric_and_set(tmp_path: Path) -> None:
    uri = _write(tmp_path / "n.jsonl", [{"prompt": "p", "answer": 12}, {"prompt": "p", "answer": "x #### 7"}])
    task = JsonlTask(train_uri=uri, test_uri=uri, verifier="numeric")
    a, b = task.load("test")
    assert (a.answer, b.answer) == ("12", "7")
    assert task.score("The answer is 12.0 units", a) and not task.score("The answer is 13", a)
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "p", "answer": "twelve"}])
    with pytest.raises(DataSourceError, match="line 1: answer 'twelve' is not a number"):
        JsonlTask(train_uri=bad, test_uri=bad, verifier="numeric").load("train")

    uri = _write(tmp_path / "s.jsonl", [{"prompt": "p", "answer": ["red", "Green", "blue"]}])
    task = JsonlTask(train_uri=uri, test_uri=uri, verifier="set")
    s = task.load("train")[0]
    assert s.answer == "red, Green, blue"
    assert task.verify("blue, red and green", s)
    assert task.verify("green; blue; red", s)
    assert not task.verify("red, green", s)
    assert set_items("a b  c") == {"a", "b", "c"}


def test_jsonl_regex_fullmatch_with_answer_placeholder() -> None:
    task = JsonlTask(train_uri="unused", verifier="regex", pattern=r"(?i)\s*{answer}\s*(dollars)?")
    s = Sample("x", "q", "4.50", {})
    assert task.verify("4.50 dollars", s)
    assert not task.verify("4x50", s)  # the answer is escaped: '.' is literal
    assert not task.verify("about 4.50", s)


def test_jsonl_regex_with_group_extracts() -> None:
    task = JsonlTask(train_uri="unused", verifier="regex", pattern=r"RESULT=\[(?P<answer>[^\]]+)\]")
    s = Sample("x", "q", "Blue", {})
    assert task.extract("draft RESULT=[red]\nfinal RESULT=[blue]") == "blue"
    assert task.score("draft RESULT=[red]\nfinal RESULT=[blue]", s)
    assert task.extract("no result") is None


def test_jsonl_regex_without_group_extracts_the_whole_match() -> None:
    task = JsonlTask(train_uri="unused", verifier="regex", pattern=r"\b[A-D]\b")
    s = Sample("x", "q", "B", {})
    assert task.extract("Options A and C are wrong, so B.") == "B"
    assert task.score("Options A and C are wrong, so B.", s)
    assert not task.score("It must be C.", s)


def test_jsonl_bad_configuration() -> None:
    with pytest.raises(ValueError, match="unknown verifier"):
        JsonlTask(train_uri="x", verifier="fuzzy")
    with pytest.raises(ValueError, match="needs a pattern"):
        JsonlTask(train_uri="x", verifier="regex")
    with pytest.raises(ValueError, match="invalid regex"):
        JsonlTask(train_uri="x", verifier="regex", pattern="(")


def test_jsonl_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataSourceError, match="no rows"):
        JsonlTask(train_uri=str(tmp_path / "e.jsonl")).load("train")
