"""Pieces of the synthesize stage: reply parsing, the leak check, training targets, the store."""

from __future__ import annotations

import json
import random

import pytest

from stratos.llm.client import ChatResult
from stratos.synthesis import prompts
from stratos.synthesis.sources import mutate_candidate, select_real, solver_answer, synthetic_id
from stratos.synthesis.store import Store
from stratos.tasks import Sample
from stratos.tasks.mahjong import MahjongTask
from stratos.tasks.mahjong_solver import winning_tiles
from stratos.tasks.mahjong_tiles import canonical_answer


def reply(text: str, reasoning: str | None = None, finish: str = "stop") -> ChatResult:
    return ChatResult(
        text=text, prompt_tokens=1, completion_tokens=1, finish_reason=finish, attempts=1, reasoning=reasoning
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Question: How many?\nSolution: 2 + 2 = 4.\nThe answer is 4",
            ("How many?", "2 + 2 = 4.\nThe answer is 4"),
        ),
        (
            "**Question:** A b c?\n\n**Solution:** step one.\nThe answer is 3",
            ("A b c?", "step one.\nThe answer is 3"),
        ),
        (
            "Sure!\nNew problem: Two lines\nof question?\nSolution: 1.\nThe answer is 1",
            ("Two lines\nof question?", "1.\nThe answer is 1"),
        ),
        ("Question: only a question", None),
        ("Solution: only a solution\nThe answer is 1", None),
        ("Question:\nSolution: nothing asked", None),
        ("", None),
    ],
)
def test_parse_generated(text, expected):
    assert prompts.parse_generated(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Using the given answer of 27, we work backwards.",
        "Since the answer was provided, the hand must wait on 🀇.",
        "We are told that the answer is 14, so ...",
        "I was given the correct answer, and ...",
        "This matches the expected answer.",
    ],
)
def test_leaks_answer(text):
    assert prompts.leaks_answer(text)


@pytest.mark.parametrize(
    "text",
    [
        "We are given that Maya buys 3 packs. 3 * 12 = 36.\nThe answer is 27",
        "The answer is given by 36 - 9 = 27.",  # ambiguous wording, but not a leak of a handed answer
        "Given the tiles 🀇🀈🀉, the answer is 🀊.",
    ],
)
def test_forward_reasoning_is_not_a_leak(text):
    assert not prompts.leaks_answer(text)


def test_reply_body_uses_separate_reasoning_only_when_the_content_has_none():
    body = prompts.reply_body(reply("Step 1.\nThe answer is 4", reasoning="long think"))
    assert body == "Step 1.\nThe answer is 4"
    body = prompts.reply_body(reply("The answer is 4", reasoning="2 + 2 = 4"))
    assert body == "2 + 2 = 4\n\nThe answer is 4"
    assert prompts.reply_body(reply("The answer is 4")) == "The answer is 4"


def test_extract_answer_falls_back_to_reasoning():
    task = MahjongTask(seed=0, train_size=5, test_size=2)
    assert prompts.extract_answer(task, reply("", reasoning="...\nThe answer is 🀇 🀊")) == "🀇 🀊"
    assert prompts.extract_answer(task, reply("no tiles here", reasoning=None)) is None


def test_question_key_ignores_the_shuffled_order_of_a_hand():
    a = Sample("a", "Hand: x", "🀇", meta={"tiles": [3, 1, 2]})
    b = Sample("b", "Hand: y", "🀇", meta={"tiles": [1, 2, 3]})
    assert prompts.question_key(a) == prompts.question_key(b)
    assert prompts.question_key(Sample("c", "  How  MANY apples? ", "1")) == prompts.question_key(
        Sample("d", "how many apples?", "2")
    )


def test_target_messages_end_in_the_canonical_answer():
    task = MahjongTask(seed=0, train_size=5, test_size=2)
    sample = task.load("train")[0]
    msgs = prompts.target_messages(task, sample, "Step 1: look.\nThe answer is something else, said loosely")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[:2] == task.messages(sample)
    assert msgs[2]["content"] == f"Step 1: look.\n\nThe answer is {sample.answer}."


def test_select_real_is_seeded_and_in_split_order():
    train = [Sample(f"s{i:02d}", f"q{i}", "1") for i in range(30)]
    a = select_real(train, limit=10, seed=3)
    assert a == select_real(train, limit=10, seed=3) != select_real(train, limit=10, seed=4)
    assert [s.id for s in a] == sorted(s.id for s in a) and len(a) == 10
    assert select_real(train, limit=99, seed=0) == train
    assert set(a) < set(select_real(train, limit=15, seed=3))  # a larger limit keeps the smaller choice


def test_mutated_candidates_are_deterministic_and_solver_correct():
    task = MahjongTask(seed=0, train_size=20, test_size=5)
    seeds = task.load("train")[:4]
    test_keys = task.test_keys()
    for i in range(12):
        cand = mutate_candidate(task, seeds, seed=7, index=i)
        assert cand == mutate_candidate(task, seeds, seed=7, index=i)
        assert cand.id == synthetic_id(i) and cand.meta["source"] == f"mutated:{seeds[i % 4].id}"
        assert cand.answer == canonical_answer(winning_tiles(cand.meta["tiles"])) == solver_answer(task, cand)
        assert tuple(sorted(cand.meta["tiles"])) not in test_keys


# -------------------------------------------------------------------------------------- store

HEADER = {"strategy": "injection", "seed": 0}


def entry(item: str, kept: bool, reason: str | None = None, cost: float = 0.1, **extra) -> dict:
    e = {
        "id": item,
        "source": "real",
        "kept": kept,
        "attempts": 1,
        "promptTokens": 10,
        "completionTokens": 5,
        "costUSD": cost,
        **extra,
    }
    if reason:
        e["reason"] = reason
    return e


def test_store_resumes_counts_and_cuts_a_torn_line(tmp_path):
    with Store(tmp_path, HEADER) as store:
        store.record(entry("a", True), {"id": "a", "messages": [], "answer": "1", "source": "real"})
        store.record(entry("b", False, "answer mismatch"))
        store.record(entry("synthetic-000000", False, "duplicate", key="tiles:1,2"))
    with open(store.state_path, "a") as fh:
        fh.write('{"id": "c", "kept": fal')
    with open(store.data_path, "a") as fh:
        fh.write('{"id": "c", "mess')
    with Store(tmp_path, HEADER) as again:
        t = again.totals
        assert t.kept == {"a": "real"} and t.decided == {"a", "b", "synthetic-000000"}
        assert dict(t.rejected) == {"answer mismatch": 1, "duplicate": 1}
        assert t.keys == {"tiles:1,2"}
        assert (t.attempts, t.prompt_tokens, t.completion_tokens) == (3, 30, 15)
        assert t.cost_usd == pytest.approx(0.3)
    assert again.state_path.read_text().endswith("}\n") and again.data_path.read_text().endswith("}\n")
    assert len(again.state_path.read_text().splitlines()) == 4  # header + 3


def test_store_counts_a_kept_row_whose_ledger_line_was_lost(tmp_path):
    with Store(tmp_path, HEADER) as store:
        store.record(entry("a", True), {"id": "a", "messages": [], "answer": "1", "source": "synthetic"})
    lines = store.state_path.read_text().splitlines(keepends=True)
    store.state_path.write_text(lines[0])  # killed between the data line and the ledger line
    with Store(tmp_path, HEADER) as again:
        assert again.totals.kept == {"a": "synthetic"} and again.totals.synthetic == 1


def test_store_moves_data_of_another_configuration_aside(tmp_path):
    with Store(tmp_path, HEADER) as store:
        store.record(entry("a", True), {"id": "a", "messages": [], "answer": "1", "source": "real"})
    with Store(tmp_path, {**HEADER, "strategy": "alignment"}) as other:
        assert other.totals.decided == set()
        assert other.data_path.read_text() == ""
        assert json.loads(other.state_path.read_text()) == {"header": {**HEADER, "strategy": "alignment"}}
    assert (tmp_path / "data" / "train.jsonl.stale").read_text().startswith('{"id": "a"')
    assert (tmp_path / "synthesize" / "state.jsonl.stale").exists()


def test_store_total_cost_does_not_depend_on_order(tmp_path):
    costs = [random.Random(i).random() / 7 for i in range(200)]
    totals = []
    for order in (costs, list(reversed(costs))):
        with Store(tmp_path / str(len(totals)), HEADER) as store:
            for i, c in enumerate(order):
                store.record(entry(f"x{i}", False, "answer mismatch", cost=c))
            totals.append(store.totals.cost_usd)
    assert totals[0] == totals[1]
