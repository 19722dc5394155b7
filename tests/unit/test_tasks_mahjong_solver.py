"""The Mahjong solver against hands whose wait sets were worked out by hand (see each comment)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from stratos.tasks.mahjong_solver import decompose, decompositions, is_complete, winning_tiles
from stratos.tasks.mahjong_tiles import (
    GLYPHS,
    canonical_answer,
    counts_of,
    format_tiles,
    name,
    parse_tiles,
)


def waits(hand: str) -> str:
    return canonical_answer(winning_tiles(parse_tiles(hand)))


def test_tile_glyphs_and_order() -> None:
    assert format_tiles(parse_tiles("123456789m")) == "🀇 🀈 🀉 🀊 🀋 🀌 🀍 🀎 🀏"
    assert format_tiles(parse_tiles("123456789p")) == "🀙 🀚 🀛 🀜 🀝 🀞 🀟 🀠 🀡"
    assert format_tiles(parse_tiles("123456789s")) == "🀐 🀑 🀒 🀓 🀔 🀕 🀖 🀗 🀘"
    assert format_tiles(parse_tiles("1234567z")) == "🀀 🀁 🀂 🀃 🀄 🀅 🀆"
    # Fixed order: characters, dots, bamboo, winds, dragons.
    assert canonical_answer(parse_tiles("🀆 🀐 🀙 🀇 🀀")) == "🀇 🀙 🀐 🀀 🀆"
    assert len(set(GLYPHS)) == 34
    assert name(parse_tiles("🀛")[0]) == "3 of dots" and name(parse_tiles("🀄")[0]) == "Red dragon"
    # The emoji variation selector models often attach to 🀄 is ignored.
    assert parse_tiles("🀄\ufe0f🀄") == parse_tiles("🀄🀄")


def test_nine_gates_waits_on_all_nine() -> None:
    # 1112345678999m waits on every character tile:
    #   +1: 111 123 456 789 99     +2: 111 22 345 678 999     +3: 11 123 345 678 999
    #   +4: 111 234 456 789 99     +5: 111 234 55 678 999     +6: 11 123 456 678 999
    #   +7: 111 234 567 789 99     +8: 111 234 567 88 999     +9: 11 123 456 789 999
    assert waits("1112345678999m") == "🀇 🀈 🀉 🀊 🀋 🀌 🀍 🀎 🀏"


def test_tile_held_four_times_cannot_win() -> None:
    # 1111m 234m 567p 789s: 567p and 789s are melds; 1111234m + t must be a pair and two melds.
    #   t=4m: 111 123 44 -> wins.   t=1m: 11 + 111 + 234 would win, but all four 1m are already
    #   in the hand, so no fifth 1m can be drawn.   t=2m, 3m, 5m: no split.
    assert waits("1111m 234m 567p 789s") == "🀊"
    # 1111m 234p 567p 789s: the only completion would be a 1m single wait -> nothing.
    assert waits("1111m 234p 567p 789s") == ""


def test_honour_pair_and_triplet() -> None:
    # EEE (triplet) + red pair + 123m 456p + 78s: the 78s sequence needs 6s or 9s.
    assert waits("🀀🀀🀀 🀄🀄 🀇🀈🀉 🀜🀝🀞 🀖🀗") == "🀕 🀘"
    # Two honour pairs (E, red) with three complete melds: either pair can become the triplet.
    assert waits("🀀🀀 🀄🀄 🀇🀈🀉 🀜🀝🀞 🀖🀗🀘") == "🀀 🀄"


def test_honour_single_wait() -> None:
    # 123m 456m 789p 111s are melds; the lone South wind needs its pair (111s as a pair leaves 1s
    # and South unpaired, so no other tile works).
    assert waits("🀁 🀇🀈🀉 🀊🀋🀌 🀟🀠🀡 🀐🀐🀐") == "🀁"


def test_honours_never_form_sequences() -> None:
    # E S W + ... : winds in a row are not a meld, so East-South-West plus melds is not complete.
    assert not is_complete(counts_of(parse_tiles("🀀🀁🀂 🀇🀈🀉 🀊🀋🀌 🀟🀠🀡 🀐🀐")))


def test_hands_with_no_wait() -> None:
    # Thirteen unconnected tiles: no tile completes four melds and a pair.
    assert waits("147m 258p 369s 1234z") == ""
    # Six honour pairs and a single: that is Seven Pairs, a special hand that does not count.
    assert waits("🀀🀀 🀁🀁 🀂🀂 🀃🀃 🀄🀄 🀅🀅 🀆") == ""


def test_more_hand_checked_waits() -> None:
    # 23m + 456p 789p 111s 55s: open wait 1m or 4m.
    assert waits("23m 456p 789p 111s 55s") == "🀇 🀊"
    # 13m (closed wait) + melds + pair: only 2m.
    assert waits("13m 456p 789p 111s 55s") == "🀈"
    # 12m (edge wait): only 3m.
    assert waits("12m 456p 789p 111s 55s") == "🀉"
    # 1112m + 456p 789p 111s: 111+2 single (2m) or 11 + 12 edge (3m).
    assert waits("1112m 456p 789p 111s") == "🀈 🀉"
    # 2345m + 3 melds: 234 + 5 single (5m) or 2 single + 345 (2m); 1m, 3m, 4m, 6m split no way.
    assert waits("2345m 456p 789p 111s") == "🀈 🀋"


def test_winning_tiles_agrees_with_brute_force() -> None:
    rng = random.Random(7)
    checked = 0
    while checked < 300:
        suit = rng.randrange(3) * 9
        hand = [suit + rng.randrange(9) for _ in range(13)]
        if max(Counter(hand).values()) > 4:
            continue
        counts = counts_of(hand)
        brute = []
        for t in range(34):
            if counts[t] < 4:
                counts[t] += 1
                if is_complete(counts):
                    brute.append(t)
                counts[t] -= 1
        assert winning_tiles(hand) == brute, format_tiles(hand)
        checked += 1


def test_too_many_copies_is_an_error() -> None:
    with pytest.raises(ValueError, match="more than 4"):
        winning_tiles(parse_tiles("11111m 234p 567p 78s"))


def test_decompose() -> None:
    hand = parse_tiles("1112345678999m") + parse_tiles("5m")
    d = decompose(hand)
    assert d is not None
    used = [d.pair, d.pair] + [t for m in d.melds for t in m.tiles]
    assert sorted(used) == sorted(hand) and len(d.melds) == 4
    assert "(pair)" in d.describe() and "(triplet)" in d.describe()
    # 111222333m 456p 77s splits as three triplets or three sequences.
    assert len(decompositions(parse_tiles("111222333m 456p 77s"))) == 2
    assert decompose(parse_tiles("147m 258p 369s 1234z 5z")) is None
    assert decompositions(parse_tiles("123m")) == []
