"""Exact Mahjong solver for standard hands: four melds (sequences or triplets) and one pair.

Works on counts arrays (34 kinds). A hand is complete when every numbered suit decomposes on its own
(melds only, or melds plus the one pair) and every honour count is 0, 2 (the pair) or 3 (a triplet).
Each suit's answer depends only on its 9 counts, so it is memoised: generating thousands of hands
then costs a few dictionary look-ups per candidate tile.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from stratos.tasks.mahjong_tiles import (
    HONOURS,
    MAX_COPIES,
    N_KINDS,
    counts_of,
    format_tiles,
    is_honour,
    tiles_of,
)

SuitCounts = tuple[int, ...]


@cache
def _suit_melds(c: SuitCounts) -> bool:
    """Whether 9 counts of one suit split into melds only.

    Greedy on the lowest tile is exact: if it is held three or more times a triplet of it is always
    safe (three identical sequences are three triplets), and what is left must start sequences.
    """
    counts = list(c)
    for i in range(9):
        n = counts[i]
        if n == 0:
            continue
        if n >= 3:
            n -= 3
        if n:
            if i > 6 or counts[i + 1] < n or counts[i + 2] < n:
                return False
            counts[i + 1] -= n
            counts[i + 2] -= n
    return True


@cache
def _suit_with_pair(c: SuitCounts) -> bool:
    """Whether 9 counts of one suit split into one pair plus melds."""
    for i in range(9):
        if c[i] >= 2:
            rest = (*c[:i], c[i] - 2, *c[i + 1 :])
            if _suit_melds(rest):
                return True
    return False


def is_complete(counts: Sequence[int]) -> bool:
    """Whether the tiles (3n+2 of them, normally 14) form melds plus exactly one pair."""
    pairs = 0
    for s in range(3):
        c = tuple(counts[9 * s : 9 * s + 9])
        r = sum(c) % 3
        if r == 1:
            return False
        if r == 2:
            pairs += 1
            if pairs > 1 or not _suit_with_pair(c):
                return False
        elif not _suit_melds(c):
            return False
    for h in range(27, 34):
        n = counts[h]
        if n == 2:
            pairs += 1
            if pairs > 1:
                return False
        elif n not in (0, 3):
            return False
    return pairs == 1


@cache
def _suit_waits(c: SuitCounts) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ranks (0..8) whose addition makes the suit melds only, and those that make it pair + melds."""
    melds, pair = [], []
    for r in range(9):
        if c[r] >= MAX_COPIES:
            continue
        n = (*c[:r], c[r] + 1, *c[r + 1 :])
        k = sum(n) % 3
        if k == 0 and _suit_melds(n):
            melds.append(r)
        elif k == 2 and _suit_with_pair(n):
            pair.append(r)
    return tuple(melds), tuple(pair)


def _state(c: SuitCounts) -> str:
    """'m' when the suit is melds only, 'p' when it is a pair plus melds, 'x' when it is neither."""
    k = sum(c) % 3
    if k == 0 and _suit_melds(c):
        return "m"
    if k == 2 and _suit_with_pair(c):
        return "p"
    return "x"


def winning_tiles(hand: Iterable[int]) -> list[int]:
    """Every tile kind that completes the 13-tile hand, in tile order.

    A kind already held four times is excluded: no fifth copy exists to draw. Suits and honours are
    independent components; the new tile goes into one of them, and the others must already be
    complete, with exactly one pair among all of them afterwards.
    """
    counts = counts_of(hand)
    if any(n > MAX_COPIES for n in counts):
        raise ValueError(f"more than {MAX_COPIES} copies of a tile in {format_tiles(tiles_of(counts))}")
    suits = [tuple(counts[9 * s : 9 * s + 9]) for s in range(3)]
    honour_states = {0: "m", 3: "m", 2: "p"}
    states = [_state(c) for c in suits] + [honour_states.get(counts[h], "x") for h in HONOURS]
    bad = states.count("x")
    pairs = states.count("p")
    out: list[int] = []
    for i, st in enumerate(states):
        if bad - (st == "x") > 0:
            continue
        others_pairs = pairs - (st == "p")
        if others_pairs > 1:
            continue
        if i < 3:
            melds, pair = _suit_waits(suits[i])
            out += [9 * i + r for r in (melds if others_pairs == 1 else pair)]
        else:
            n = counts[27 + i - 3]
            if (others_pairs == 1 and n == 2) or (others_pairs == 0 and n == 1):
                out.append(27 + i - 3)
    return sorted(out)


@dataclass(frozen=True)
class Meld:
    kind: Literal["sequence", "triplet"]
    first: int

    @property
    def tiles(self) -> tuple[int, int, int]:
        if self.kind == "triplet":
            return (self.first, self.first, self.first)
        return (self.first, self.first + 1, self.first + 2)


@dataclass(frozen=True)
class Decomposition:
    pair: int
    melds: tuple[Meld, ...]

    def describe(self) -> str:
        """E.g. '🀇🀇 (pair) + 🀇🀈🀉 (sequence) + 🀄🀄🀄 (triplet)'."""
        parts = [f"{format_tiles([self.pair] * 2, sep='')} (pair)"]
        parts += [f"{format_tiles(m.tiles, sep='')} ({m.kind})" for m in self.melds]
        return " + ".join(parts)


def _melds(counts: list[int], start: int) -> Iterator[tuple[Meld, ...]]:
    i = start
    while i < N_KINDS and counts[i] == 0:
        i += 1
    if i == N_KINDS:
        yield ()
        return
    if counts[i] >= 3:
        counts[i] -= 3
        for rest in _melds(counts, i):
            yield (Meld("triplet", i), *rest)
        counts[i] += 3
    if not is_honour(i) and i % 9 <= 6 and counts[i + 1] and counts[i + 2]:
        for t in (i, i + 1, i + 2):
            counts[t] -= 1
        for rest in _melds(counts, i):
            yield (Meld("sequence", i), *rest)
        for t in (i, i + 1, i + 2):
            counts[t] += 1


def decompositions(hand14: Iterable[int]) -> list[Decomposition]:
    """All distinct ways to split the tiles into one pair plus melds (pair first, triplets first)."""
    counts = counts_of(hand14)
    if sum(counts) % 3 != 2:
        return []
    found: list[Decomposition] = []
    for p in range(N_KINDS):
        if counts[p] < 2:
            continue
        counts[p] -= 2
        for melds in _melds(counts, 0):
            d = Decomposition(p, melds)
            if d not in found:
                found.append(d)
        counts[p] += 2
    return found


def decompose(hand14: Iterable[int]) -> Decomposition | None:
    """One decomposition (the first in a fixed order), or None when the hand is not complete."""
    found = decompositions(hand14)
    return found[0] if found else None
