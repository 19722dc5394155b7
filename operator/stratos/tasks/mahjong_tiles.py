"""Mahjong tiles: 34 kinds as indices 0..33, their Unicode glyphs, names, parsing and formatting.

Index layout (also the fixed sort order of canonical answers): characters/man 1-9 (0-8),
dots/pin 1-9 (9-17), bamboo/sou 1-9 (18-26), winds East South West North (27-30),
dragons red, green, white (31-33). Counts arrays (length 34) are the solver's working form;
the Unicode glyphs are what prompts and answers carry, because the paper's point is that models
have rarely seen them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

N_KINDS = 34
MAX_COPIES = 4
HONOURS = range(27, 34)
SUIT_NAMES = ("characters", "dots", "bamboo")

_MAN = [chr(0x1F007 + i) for i in range(9)]  # 🀇..🀏
_PIN = [chr(0x1F019 + i) for i in range(9)]  # 🀙..🀡
_SOU = [chr(0x1F010 + i) for i in range(9)]  # 🀐..🀘
_WINDS = [chr(0x1F000 + i) for i in range(4)]  # 🀀🀁🀂🀃
_DRAGONS = [chr(0x1F004), chr(0x1F005), chr(0x1F006)]  # 🀄🀅🀆 (red, green, white)

GLYPHS: tuple[str, ...] = tuple(_MAN + _PIN + _SOU + _WINDS + _DRAGONS)
_INDEX = {g: i for i, g in enumerate(GLYPHS)}
_HONOUR_NAMES = (
    "East wind",
    "South wind",
    "West wind",
    "North wind",
    "Red dragon",
    "Green dragon",
    "White dragon",
)
# Compact notation some models fall back to: 1m..9m, 1p..9p, 1s..9s, 1z..7z (E S W N, red green white
# in the order of our index layout).
_COMPACT = re.compile(r"(?<![0-9A-Za-z])([1-9]+)([mpsz])(?![A-Za-z0-9])")
_VARIATION_SELECTORS = str.maketrans("", "", "\ufe0e\ufe0f")


def is_honour(tile: int) -> bool:
    return tile >= 27


def suit_of(tile: int) -> int:
    """0, 1, 2 for the numbered suits, 3 for honours."""
    return tile // 9 if tile < 27 else 3


def rank_of(tile: int) -> int:
    """1..9 for suited tiles, 0 for honours."""
    return tile % 9 + 1 if tile < 27 else 0


def name(tile: int) -> str:
    """A human description, e.g. '3 of dots' or 'Red dragon'."""
    if is_honour(tile):
        return _HONOUR_NAMES[tile - 27]
    return f"{rank_of(tile)} of {SUIT_NAMES[suit_of(tile)]}"


def counts_of(tiles: Iterable[int]) -> list[int]:
    counts = [0] * N_KINDS
    for t in tiles:
        counts[t] += 1
    return counts


def tiles_of(counts: Sequence[int]) -> list[int]:
    return [t for t in range(N_KINDS) for _ in range(counts[t])]


def parse_tiles(text: str) -> list[int]:
    """Every Unicode tile in `text`, in order; if there are none, the compact notation (e.g. '147m 5z').

    Emoji variation selectors (🀄️ is often written with U+FE0F) are ignored.
    """
    text = text.translate(_VARIATION_SELECTORS)
    found = [_INDEX[ch] for ch in text if ch in _INDEX]
    if found:
        return found
    for m in _COMPACT.finditer(text):
        digits, suit = m.group(1), m.group(2)
        for d in digits:
            rank = int(d)
            if suit == "z":
                if rank <= 7:
                    found.append(27 + rank - 1)
            else:
                found.append("mps".index(suit) * 9 + rank - 1)
    return found


def format_tiles(tiles: Iterable[int], *, sort: bool = True, sep: str = " ") -> str:
    """Glyphs joined by `sep`; sorted in the fixed tile order unless told otherwise."""
    seq = sorted(tiles) if sort else list(tiles)
    return sep.join(GLYPHS[t] for t in seq)


def canonical_answer(tiles: Iterable[int]) -> str:
    """The canonical answer string: distinct winning tiles in tile order, joined with spaces."""
    return format_tiles(sorted(set(tiles)))


def legend() -> str:
    """One line per tile family, so a prompt can teach what the glyphs mean."""
    return "\n".join(
        [
            f"- {''.join(_MAN)} are 1 to 9 of characters",
            f"- {''.join(_PIN)} are 1 to 9 of dots",
            f"- {''.join(_SOU)} are 1 to 9 of bamboo",
            f"- {''.join(_WINDS)} are the East, South, West and North winds",
            f"- {''.join(_DRAGONS)} are the red, green and white dragons",
        ]
    )
