"""Durations as people write them in YAML: `90m`, `2h`, `1h30m`, `3600s`, `1.5h`, `2d`.

The spec keeps the string the user wrote (so `kubectl get -o yaml` shows it back unchanged); code
that needs a number calls `parse_duration`. The grammar is a subset of Go's `time.ParseDuration`
(plus days), and `DURATION_PATTERN` is written so that Python and the API server's RE2 engine agree.
"""

from __future__ import annotations

import math
import re

#: Units and their length in seconds, largest first (the order `format_duration` emits them).
UNITS: dict[str, int] = {"d": 86400, "h": 3600, "m": 60, "s": 1}

#: Whole-string pattern: one or more `<number><unit>` terms, no spaces, no sign.
DURATION_PATTERN = r"^([0-9]+([.][0-9]+)?[dhms])+$"

#: Upper bound on the written form; keeps the CRD's CEL cost estimate small.
DURATION_MAX_LENGTH = 32

_TERM = re.compile(r"([0-9]+(?:\.[0-9]+)?)([dhms])")
_WHOLE = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> float:
    """Seconds in `text` ("1h30m" -> 5400.0). Raises ValueError naming the accepted forms."""
    s = text.strip()
    if not _WHOLE.fullmatch(s):
        raise ValueError(
            f"invalid duration {text!r}: expected <number><unit> terms with units d, h, m, s, "
            "e.g. 90m, 2h, 1h30m, 3600s"
        )
    return float(sum(float(num) * UNITS[unit] for num, unit in _TERM.findall(s)))


def format_duration(seconds: float) -> str:
    """Shortest canonical form of `seconds` (5400 -> "1h30m", 0 -> "0s"); fractions of a second round up."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"cannot format duration of {seconds} seconds")
    rest = math.ceil(seconds)
    parts = []
    for unit, size in UNITS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
