"""The Mahjong task: seeded generation, splits, prompts, mutation, explanations and extraction."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from stratos.tasks.base import Sample
from stratos.tasks.mahjong import MahjongTask, explain, extract_tiles, parse_new_hand
from stratos.tasks.mahjong_gen import generate_hands, mutate_hand
from stratos.tasks.mahjong_solver import winning_tiles
from stratos.tasks.mahjong_tiles import canonical_answer, format_tiles, parse_tiles


def _check_hand(tiles: list[int]) -> None:
    assert len(tiles) == 13
    assert max(Counter(tiles).values()) <= 4


def test_default_splits_are_fast_valid_and_disjoint() -> None:
    start = time.perf_counter()
    task = MahjongTask(seed=11)
    train, test = task.load("train"), task.load("test")
    elapsed = time.perf_counter() - start
    assert (len(train), len(test)) == (4260, 100)
    # About 1-2 s on an idle core (solver memoised per suit); the bound only catches regressions.
    assert elapsed < 20, f"generating 4,360 hands took {elapsed:.2f}s"
    keys = [tuple(sorted(s.meta["tiles"])) for s in train + test]
    assert len(set(keys)) == len(keys), "hands repeat within or across splits"
    assert len({s.id for s in train + test}) == len(train) + len(test)
    for s in train + test:
        tiles = s.meta["tiles"]
        _check_hand(tiles)
        wins = winning_tiles(tiles)
        assert wins, "every hand must have a winning tile"
        assert s.answer == canonical_answer(wins)
        assert s.question.startswith("Hand: ") and parse_tiles(s.question) == tiles
    # Difficulty is spread over 1, 2, 3, 4 and 5+ winning tiles.
    spread = Counter(min(s.meta["waits"], 5) for s in train)
    assert set(spread) == {1, 2, 3, 4, 5} and min(spread.values()) > 700


def test_generation_is_deterministic_per_seed() -> None:
    a = MahjongTask(seed=3, train_size=50, test_size=10)
    b = MahjongTask(seed=3, train_size=50, test_size=10)
    c = MahjongTask(seed=4, train_size=50, test_size=10)
    assert [(s.id, s.question, s.answer) for s in a.load("train")] == [
        (s.id, s.question, s.answer) for s in b.load("train")
    ]
    assert [s.question for s in a.load("test")] != [s.question for s in c.load("test")]
    assert a.load("train")[0].id == "mahjong-3-train-00000"
    # A bigger split extends a smaller one, so ids stay stable when sizes change.
    bigger = MahjongTask(seed=3, train_size=80, test_size=10).load("train")
    assert [s.question for s in bigger[:50]] == [s.question for s in a.load("train")]


def test_generate_hands_excludes() -> None:
    first = generate_hands(5, "x", 20)
    again = generate_hands(5, "x", 20, exclude={tuple(sorted(first[0][0]))})
    assert tuple(sorted(first[0][0])) not in {tuple(sorted(h)) for h, _ in again}


def test_unknown_split() -> None:
    with pytest.raises(ValueError, match="split"):
        MahjongTask(train_size=2, test_size=1).load("dev")  # type: ignore[arg-type]


def test_verify_compares_sets_exactly() -> None:
    task = MahjongTask()
    s = Sample("x", "Hand: …", "🀇 🀊", {})
    assert task.verify("🀊 🀇", s)
    assert task.verify("🀇, 🀊, 🀊", s)
    assert not task.verify("🀇", s)
    assert not task.verify("🀇 🀊 🀍", s)
    assert not task.verify("", s) and not task.verify(None, s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("After checking each tile, the answer is 🀇 🀊.", "🀇 🀊"),
        ("The answer is 🀇 and 🀊, because 🀈🀉 forms a sequence with either.", "🀇 🀊"),
        ("**Winning tiles:** 🀊, 🀇", "🀇 🀊"),
        ("The winning tiles are:\n- 🀇 (1 of characters)\n- 🀊 (4 of characters)\n\nThose complete it.", "🀇"),
        ("The winning tiles are:\n- 🀇\n- 🀊\n", "🀇 🀊"),
        ("Final answer: \\boxed{🀇, 🀊}", "🀇 🀊"),
        ("<think>maybe 🀄🀄🀄 ...</think>\nAnswer: 🀄\ufe0f 🀅", "🀄 🀅"),
        ("Sorting gives 🀇🀈🀉 🀊🀋.\nSo you need 🀌 or 🀉 to win.", "🀉 🀌"),
        ("In short notation the answer is 14m.", "🀇 🀊"),
        ("So the answer is the two tiles 🀙 and 🀜.", "🀙 🀜"),
        ("The answer is 🀇 🀊.\nNote that 🀋 is not a winning tile: it leaves 🀈🀉🀋 unmatched.", "🀇 🀊"),
        ("I cannot determine this.", None),
        ("", None),
    ],
)
def test_extract_realistic_outputs(text: str, expected: str | None) -> None:
    assert MahjongTask().extract(text) == expected


def test_extract_list_with_descriptions_keeps_first_group() -> None:
    # Bulleted tiles followed by explanations: the first group ends at the explanation words.
    assert format_tiles(extract_tiles("The answer is 🀇 🀊 (edge)")) == "🀇 🀊"


def test_messages_and_reverse_messages() -> None:
    task = MahjongTask(train_size=5, test_size=2)
    s = task.load("train")[0]
    msgs = task.messages(s)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "four melds" in msgs[0]["content"].lower() or "four melds" in msgs[0]["content"]
    assert "🀇🀈🀉🀊🀋🀌🀍🀎🀏" in msgs[0]["content"]  # the legend teaches the glyphs
    assert s.question in msgs[1]["content"] and "The answer is" in msgs[1]["content"]
    hinted = task.messages(s, reasoning=task.explain(s))[1]["content"]
    assert "<reasoning>" in hinted and "Step 3" in hinted
    assert f"The answer is {s.answer}" not in hinted  # the hint does not give the answer line away
    rev = task.reverse_messages(s)[1]["content"]
    assert s.answer in rev and "pair and four melds" in rev


def test_explain_ends_with_the_answer_and_shows_decompositions() -> None:
    hand = parse_tiles("1111m 234m 567p 789s")
    text = explain(hand, "🀊")
    assert text.endswith("The answer is 🀊.")
    assert "🀇🀇🀇 (triplet)" in text and "already held four times" in text
    assert MahjongTask().extract(text) == "🀊"
    with pytest.raises(ValueError, match="not the winning set"):
        explain(hand, "🀇 🀊")
    for s in MahjongTask(seed=2, train_size=30, test_size=2).load("train"):
        assert MahjongTask().extract(explain(s.meta["tiles"], s.answer)) == s.answer


def test_mutate_hand_produces_valid_new_hands() -> None:
    rng = random.Random(0)
    for s in MahjongTask(seed=1, train_size=200, test_size=5).load("train"):
        new, answer = mutate_hand(s.meta["tiles"], rng)
        _check_hand(new)
        assert answer and answer == canonical_answer(winning_tiles(new))
        assert sorted(new) != sorted(s.meta["tiles"])
        # Only one group changed: at most four tiles differ from the original hand.
        diff = Counter(s.meta["tiles"]) - Counter(new)
        assert sum(diff.values()) <= 4
    with pytest.raises(ValueError, match="no winning tile"):
        mutate_hand(parse_tiles("147m 258p 369s 1234z"), rng)
    with pytest.raises(ValueError, match="13 tiles"):
        mutate_hand("🀇🀈", rng)


def test_task_mutate_avoids_test_hands() -> None:
    task = MahjongTask(seed=9, train_size=20, test_size=20)
    test_keys = task.test_keys()
    rng = random.Random(1)
    for i, s in enumerate(task.load("train")):
        m = task.mutate(s, rng, sample_id=f"syn-{i}")
        assert tuple(sorted(m.meta["tiles"])) not in test_keys
        assert m.id == f"syn-{i}" and m.meta["source"] == f"mutated:{s.id}"
        assert m.answer == canonical_answer(winning_tiles(m.meta["tiles"]))


def test_figure5_augmentation_prompt_and_parsing() -> None:
    task = MahjongTask(train_size=3, test_size=1)
    s = task.load("train")[0]
    prompt = task.augment_messages(s)[1]["content"]
    assert "replacing one set of three consecutive sequence tiles" in prompt and s.answer in prompt
    new, _ = mutate_hand(s.meta["tiles"], random.Random(3))
    reply = f"New hand: {format_tiles(new)}\nLet me check... The answer is 🀇."
    assert parse_new_hand(reply) == sorted(new)
    assert parse_new_hand("New hand: 🀇🀈🀉") is None  # not 13 tiles
    assert parse_new_hand("New hand: 147m 258p 369s 1234z") is None  # no glyphs: not parsed
    assert parse_new_hand("no hand here") is None
