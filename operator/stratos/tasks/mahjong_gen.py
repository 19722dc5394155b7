"""Seeded generation of 13-tile Mahjong hands that wait on at least one tile, and their mutation.

A hand is built as a complete 14-tile hand (a pair and four melds, never more than four copies of a
kind) minus one tile, so it always has a winning tile; the solver then finds all of them. Like the
Mahjong-Winning-Tiles dataset the paper uses, hands are shown shuffled and are resampled so that the
number of winning tiles (the difficulty) is spread evenly over 1, 2, 3, 4 and 5 or more.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from stratos.tasks.mahjong_solver import decompositions, winning_tiles
from stratos.tasks.mahjong_tiles import MAX_COPIES, canonical_answer, counts_of, parse_tiles

#: Difficulty buckets by number of winning tiles; the last one is "this many or more".
WAIT_BUCKETS = (1, 2, 3, 4, 5)
_TRIPLET_P = 0.25
_MAX_ATTEMPTS = 200


def _fits(counts: list[int], tiles: Sequence[int]) -> bool:
    return all(counts[t] + tiles.count(t) <= MAX_COPIES for t in set(tiles))


def _random_group(rng: random.Random, *, pair: bool, suits: Sequence[int], honour_p: float) -> list[int]:
    if honour_p and rng.random() < honour_p:
        t = rng.randrange(27, 34)
        return [t] * (2 if pair else 3)
    s = rng.choice(suits)
    if pair:
        t = s * 9 + rng.randrange(9)
        return [t, t]
    if rng.random() < _TRIPLET_P:
        t = s * 9 + rng.randrange(9)
        return [t] * 3
    t = s * 9 + rng.randrange(7)
    return [t, t + 1, t + 2]


def random_complete_hand(rng: random.Random, *, suits: Sequence[int], honour_p: float) -> list[int]:
    """14 tiles: a pair and four melds drawn from `suits` (0..2) and, with `honour_p`, honours."""
    while True:
        counts = [0] * 34
        tiles: list[int] = []
        for g in range(5):
            for _ in range(20):
                group = _random_group(rng, pair=g == 0, suits=suits, honour_p=honour_p)
                if _fits(counts, group):
                    for t in group:
                        counts[t] += 1
                    tiles += group
                    break
            else:
                break
        if len(tiles) == 14:
            return tiles


def _style(rng: random.Random, bucket: int) -> tuple[list[int], float]:
    """Suits and honour probability; many-wait buckets mostly come from one-suit hands."""
    r = rng.random()
    one_suit = 0.8 if bucket >= 4 else 0.35
    if r < one_suit:
        return [rng.randrange(3)], 0.0
    if r < one_suit + (1 - one_suit) / 2:
        return rng.sample(range(3), 2), 0.15
    return [0, 1, 2], 0.25


def generate_hand(rng: random.Random, *, bucket: int | None = None) -> tuple[list[int], list[int]]:
    """(13 tiles in shuffled display order, winning tiles in tile order).

    With `bucket`, retry until the wait count falls in it (the last bucket is open-ended); after
    too many attempts take whatever came, so generation always terminates.
    """
    hand: list[int] = []
    waits: list[int] = []
    for _ in range(_MAX_ATTEMPTS):
        suits, honour_p = _style(rng, bucket or 1)
        hand = random_complete_hand(rng, suits=suits, honour_p=honour_p)
        hand.pop(rng.randrange(14))
        waits = winning_tiles(hand)
        if bucket is None or len(waits) == bucket or (bucket == WAIT_BUCKETS[-1] and len(waits) >= bucket):
            break
    rng.shuffle(hand)
    return hand, waits


def generate_hands(
    seed: int,
    stream: str,
    n: int,
    *,
    exclude: set[tuple[int, ...]] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """`n` distinct hands from the named stream ('train', 'test'), none of them in `exclude`.

    Each stream has its own generator seeded from (seed, stream), so growing one split never
    changes the other, and a bigger split extends a smaller one.
    """
    rng = random.Random(f"stratos-mahjong:{seed}:{stream}")
    seen = set(exclude or ())
    out: list[tuple[list[int], list[int]]] = []
    while len(out) < n:
        bucket = WAIT_BUCKETS[len(out) % len(WAIT_BUCKETS)]
        hand, waits = generate_hand(rng, bucket=bucket)
        key = tuple(sorted(hand))
        if key in seen:
            continue
        seen.add(key)
        out.append((hand, waits))
    return out


def _replacement(rng: random.Random, group: list[int], suits: Sequence[int]) -> list[int]:
    """A new group of the same shape: pair for pair, sequence for sequence, triplet for triplet."""
    if len(group) == 2 or group[0] == group[1]:
        honour_p = 0.3 if any(t >= 27 for t in group) else 0.1
        t = rng.randrange(27, 34) if rng.random() < honour_p else rng.choice(suits) * 9 + rng.randrange(9)
        return [t] * len(group)
    t = rng.choice(suits) * 9 + rng.randrange(7)
    return [t, t + 1, t + 2]


def mutate_hand(hand: Sequence[int] | str, rng: random.Random) -> tuple[list[int], str]:
    """A new tenpai hand made by replacing one meld or the pair of `hand`, and its canonical answer.

    This is the programmatic form of the paper's Figure 5 augmentation: complete the hand with one
    of its winning tiles, decompose it, swap one group for a new group of the same shape, and take
    the winning tile back out (or a tile of the new group when it is gone). The solver re-derives
    the answer, so the result is correct by construction. Returns the new 13 tiles sorted.
    Raises ValueError when `hand` has no winning tile.
    """
    tiles = parse_tiles(hand) if isinstance(hand, str) else list(hand)
    if len(tiles) != 13:
        raise ValueError(f"a hand has 13 tiles, got {len(tiles)}")
    waits = winning_tiles(tiles)
    if not waits:
        raise ValueError("the hand has no winning tile, so it has no meld decomposition to mutate")
    old = sorted(tiles)
    suits = sorted({t // 9 for t in tiles if t < 27}) or [rng.randrange(3)]
    for _ in range(_MAX_ATTEMPTS):
        w = rng.choice(waits)
        d = rng.choice(decompositions([*tiles, w]))
        groups = [[d.pair, d.pair]] + [list(m.tiles) for m in d.melds]
        i = rng.randrange(len(groups))
        new_group = _replacement(rng, groups[i], suits)
        if sorted(new_group) == sorted(groups[i]):
            continue
        new14 = [t for j, g in enumerate(groups) if j != i for t in g] + new_group
        if any(n > MAX_COPIES for n in counts_of(new14)):
            continue
        out = w if w in new14 else rng.choice(new_group)
        new14.remove(out)
        new13 = sorted(new14)
        if new13 == old:
            continue
        return new13, canonical_answer(winning_tiles(new13))
    raise ValueError("could not find a different valid hand")  # pragma: no cover - needs ~200 misses
