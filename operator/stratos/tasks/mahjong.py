"""The built-in Mahjong winning-tiles task (the paper's out-of-domain task).

Given 13 tiles in Unicode, name every tile that completes a standard hand (four melds and a pair).
Data comes from a seeded generator (`mahjong_gen`) and answers from an exact solver
(`mahjong_solver`), so the task needs no download and verification is exact.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from stratos.tasks.base import Message, Sample, Split, Task
from stratos.tasks.extract import answer_span, answer_tails, last_boxed, strip_thinking
from stratos.tasks.mahjong_gen import generate_hands, mutate_hand
from stratos.tasks.mahjong_solver import decompose, winning_tiles
from stratos.tasks.mahjong_tiles import (
    GLYPHS,
    MAX_COPIES,
    SUIT_NAMES,
    canonical_answer,
    counts_of,
    format_tiles,
    legend,
    name,
    parse_tiles,
    rank_of,
    suit_of,
)

DEFAULT_TRAIN_SIZE = 4260
DEFAULT_TEST_SIZE = 100

SYSTEM_PROMPT = (
    "Rules: Given 13 Mahjong tiles, return all possible winning tiles that would complete the hand. "
    "A winning hand has 14 tiles: one pair (two identical tiles) and four melds. A meld is either a "
    "sequence (three consecutive numbers of the same suit, e.g. 🀇🀈🀉) or a triplet (three identical "
    "tiles, e.g. 🀄🀄🀄). Winds and dragons only form pairs and triplets, never sequences. Special "
    "hands (e.g. Thirteen Orphans, Seven Pairs) do not count. Each tile exists four times, so a tile "
    f"already held four times cannot be a winning tile.\n\nTiles:\n{legend()}"
)
ANSWER_FORMAT = (
    "End your response with a final line of the form "
    "'The answer is <all winning tiles, separated by spaces>'."
)

_GLYPH = "[" + "".join(GLYPHS) + "][\ufe0e\ufe0f]?"
_SEP = r"(?:[\s,，、;/&+*•\-]|\band\b|\bor\b)*"
_RUN = re.compile(f"{_GLYPH}(?:{_SEP}{_GLYPH})*", re.IGNORECASE)
_NEW_HAND = re.compile(r"new\s+(?:13-tile\s+)?hand\s*[:：]?", re.IGNORECASE)


def _first_run(text: str | None) -> list[int]:
    """The first group of tiles written together ('🀇, 🀊 and 🀋'); stops at other words."""
    if not text:
        return []
    m = _RUN.search(text)
    return parse_tiles(m.group(0)) if m else []


def extract_tiles(text: str | None) -> list[int]:
    """The winning tiles a model states: \\boxed{…}, then 'The answer is …' (the last such phrase that
    tiles follow; lists over several lines allowed), then '#### …' or the final line, then the last
    line that holds tiles at all."""
    if not text or not text.strip():
        return []
    body = strip_thinking(text)
    boxed = last_boxed(body)
    tiles = _first_run(boxed) or parse_tiles(boxed or "")
    tails = [] if tiles else answer_tails(body)
    # Tiles right after the phrase first ("winning tile: it leaves 🀈🀉🀋" states no answer), then
    # tiles a few words later ("the answer is the tile 🀇").
    for close in (lambda gap: not re.search(r"\w", gap), lambda gap: len(gap.strip()) <= 40):
        for tail in tails:
            m = _RUN.search(tail[:400])
            if m and close(tail[: m.start()]):
                tiles = parse_tiles(m.group(0))
                break
        if tiles:
            break
    if not tiles:
        span = answer_span(body)
        tiles = _first_run(span) or parse_tiles(span or "")
    if not tiles:
        for line in reversed(body.splitlines()):
            tiles = _first_run(line)
            if tiles:
                break
    return tiles


def _suit_lines(tiles: Iterable[int]) -> list[str]:
    counts = counts_of(tiles)
    out = []
    for s in range(3):
        group = [t for t in range(9 * s, 9 * s + 9) for _ in range(counts[t])]
        if group:
            ranks = " ".join(str(rank_of(t)) for t in group)
            out.append(f"- {SUIT_NAMES[s]}: {format_tiles(group, sep='')} (numbers {ranks})")
    honours = [t for t in range(27, 34) for _ in range(counts[t])]
    if honours:
        named = ", ".join(f"{name(t)} x{counts[t]}" for t in sorted(set(honours)))
        out.append(f"- honours: {format_tiles(honours, sep='')} ({named})")
    return out


def explain(hand13: Sequence[int] | str, answer: Iterable[int] | str) -> str:
    """Step-by-step reasoning from a hand to its winning tiles, ending with 'The answer is …'.

    The programmatic teacher: for each winning tile it shows the split of the 14 tiles into a pair
    and four melds, then names the nearby tiles that fail. Raises ValueError if `answer` is not
    exactly the solver's set, since an explanation of a wrong answer would teach the wrong thing.
    """
    tiles = parse_tiles(hand13) if isinstance(hand13, str) else list(hand13)
    wins = sorted(set(parse_tiles(answer) if isinstance(answer, str) else answer))
    truth = winning_tiles(tiles)
    if wins != truth:
        raise ValueError(f"{format_tiles(wins)} is not the winning set {format_tiles(truth)}")
    counts = counts_of(tiles)
    lines = ["Step 1: Sort the 13 tiles and group them by suit.", *_suit_lines(tiles)]
    lines.append(
        "Step 2: A winning hand is 14 tiles: one pair plus four melds (a sequence of three consecutive "
        "numbers in one suit, or a triplet of identical tiles). Only a tile equal to or within two "
        "numbers of a held tile, or an honour already held, can help, so try each of those as the "
        "14th tile."
    )
    lines.append("Step 3: Candidates that complete the hand:")
    for t in wins:
        d = decompose([*tiles, t])
        assert d is not None  # the solver said t wins
        g = GLYPHS[t]
        lines.append(f"- Adding {g} ({name(t)}): {d.describe()}. This is complete, so {g} wins.")
    candidates = [t for t in range(34) if _near(counts, t)]
    full = [t for t in candidates if counts[t] >= MAX_COPIES]
    failing = [t for t in candidates if t not in wins and counts[t] < MAX_COPIES]
    lines.append("Step 4: Check the remaining candidates.")
    if failing:
        lines.append(
            f"- Adding any of {format_tiles(failing)} leaves tiles that cannot all be grouped into a "
            "pair and four melds, so none of them wins."
        )
    for t in full:
        lines.append(f"- {GLYPHS[t]} is already held four times, so no copy is left to win on.")
    if not failing and not full:
        lines.append("- There are no other candidates.")
    lines.append(f"The answer is {canonical_answer(wins)}.")
    return "\n".join(lines)


def _near(counts: Sequence[int], t: int) -> bool:
    if t >= 27:
        return counts[t] > 0
    s = suit_of(t)
    return any(counts[u] for u in range(max(9 * s, t - 2), min(9 * s + 8, t + 2) + 1))


@lru_cache(maxsize=8)
def _generated(seed: int, train_size: int, test_size: int) -> tuple[tuple[Sample, ...], tuple[Sample, ...]]:
    test = generate_hands(seed, "test", test_size)
    train = generate_hands(seed, "train", train_size, exclude={tuple(sorted(h)) for h, _ in test})
    return (
        tuple(_sample(f"mahjong-{seed}-train-{i:05d}", h, w) for i, (h, w) in enumerate(train)),
        tuple(_sample(f"mahjong-{seed}-test-{i:05d}", h, w) for i, (h, w) in enumerate(test)),
    )


def question(hand: Sequence[int]) -> str:
    return (
        f"Hand: {format_tiles(hand, sort=False)}\n"
        "Which tiles would complete this hand? List every winning tile."
    )


def _sample(sample_id: str, hand: Sequence[int], waits: Sequence[int], source: str = "generated") -> Sample:
    return Sample(
        id=sample_id,
        question=question(hand),
        answer=canonical_answer(waits),
        meta={"tiles": list(hand), "waits": len(waits), "source": source},
    )


class MahjongTask(Task):
    """Mahjong winning tiles: seeded data, exact verification (the set of tiles must match)."""

    name = "mahjong"
    system_prompt = SYSTEM_PROMPT
    answer_format = ANSWER_FORMAT

    def __init__(self, *, seed: int = 0, train_size: int | None = None, test_size: int | None = None):
        self.seed = seed
        self.train_size = DEFAULT_TRAIN_SIZE if train_size is None else train_size
        self.test_size = DEFAULT_TEST_SIZE if test_size is None else test_size

    def load(self, split: Split) -> list[Sample]:
        train, test = _generated(self.seed, self.train_size, self.test_size)
        if split == "train":
            return list(train)
        if split == "test":
            return list(test)
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")

    def extract(self, text: str) -> str | None:
        tiles = extract_tiles(text)
        return canonical_answer(tiles) if tiles else None

    def verify(self, predicted: str | None, sample: Sample) -> bool:
        if not predicted:
            return False
        got = set(parse_tiles(predicted))
        return bool(got) and got == set(parse_tiles(sample.answer))

    def reverse_messages(self, sample: Sample) -> list[Message]:
        msgs = super().reverse_messages(sample)
        msgs[1]["content"] += (
            " For each winning tile, show how the 14 tiles split into one pair and four melds, "
            "and say why the other nearby tiles fail."
        )
        return msgs

    def explain(self, sample: Sample) -> str:
        """Programmatic reasoning for a sample (see `explain`)."""
        return explain(sample.meta.get("tiles") or sample.question.split("\n", 1)[0], sample.answer)

    def test_keys(self) -> set[tuple[int, ...]]:
        return {tuple(sorted(s.meta["tiles"])) for s in self.load("test")}

    def mutate(self, sample: Sample, rng: random.Random, *, sample_id: str) -> Sample:
        """A synthetic sample derived from `sample` by `mutate_hand`, never one of the test hands."""
        tiles = sample.meta.get("tiles") or parse_tiles(sample.question.split("\n", 1)[0])
        held_out = self.test_keys()
        for _ in range(100):
            new, answer = mutate_hand(tiles, rng)
            if tuple(new) not in held_out:
                break
        else:  # pragma: no cover - astronomically unlikely
            raise ValueError(f"could not mutate {sample.id} away from the test split")
        rng.shuffle(new)
        return _sample(sample_id, new, parse_tiles(answer), source=f"mutated:{sample.id}")

    def augment_messages(self, sample: Sample, reasoning: str | None = None) -> list[Message]:
        """The paper's Figure 5 prompt: ask a teacher to derive a new hand and its winning tiles."""
        cot = reasoning or self.explain(sample)
        user = (
            "Requirements: Now, I will provide you with a 13-tile hand, along with a CoT and the "
            "corresponding winning tiles. First, understand the game logic carefully. After thoroughly "
            "analyzing it, modify the hand by replacing one set of three consecutive sequence tiles with "
            "a new sequence set or one pair with a new pair to form a new valid 13-tile hand. Then, "
            "provide the new set of winning tiles.\n\n"
            f"{question(sample.meta.get('tiles') or parse_tiles(sample.question))}\n\n"
            f"CoT:\n{cot}\n\nWinning tiles: {sample.answer}\n\n"
            "Write the new hand on a line 'New hand: <13 tiles>', then reason step by step about it, "
            "and end with 'The answer is <all winning tiles of the new hand>'."
        )
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]


def parse_new_hand(text: str) -> list[int] | None:
    """The 13 tiles after 'New hand:' in a teacher's Figure 5 reply, if they form a valid tenpai hand.

    Valid means 13 tiles, at most four copies of each, and at least one winning tile; the caller
    then takes the answer from the solver, not from the teacher.
    """
    m = _NEW_HAND.search(text or "")
    if not m:
        return None
    tiles = _first_run(text[m.end() : m.end() + 200])
    if len(tiles) != 13 or max(counts_of(tiles)) > MAX_COPIES:
        return None
    return tiles if winning_tiles(tiles) else None
