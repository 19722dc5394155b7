"""Finding the checkpoint to resume from, and summarising a run's logged metrics.

A pod killed while the Trainer was writing ``checkpoint-N`` leaves a directory without
``trainer_state.json`` (the Trainer writes it last) or with transformers' JIT-checkpoint sentinel;
resuming from it would fail, so only complete checkpoints count and the newest of those wins (the
Trainer keeps two, so the previous one is still there).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
INCOMPLETE_MARKER = "checkpoint-is-incomplete.txt"


def complete_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Complete ``checkpoint-N`` directories in ``folder``, oldest step first."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        m = _CHECKPOINT.match(child.name)
        complete = (child / STATE_FILE).is_file() and not (child / INCOMPLETE_MARKER).exists()
        if m and child.is_dir() and complete:
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def last_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    found = complete_checkpoints(folder)
    return found[-1] if found else None


def first_last(history: Iterable[Mapping[str, Any]], key: str) -> dict[str, float] | None:
    """``{"first": ..., "last": ...}`` of a metric in the Trainer's ``log_history`` (None if never logged)."""
    values = [float(h[key]) for h in history if isinstance(h.get(key), int | float)]
    if not values:
        return None
    return {"first": round(values[0], 6), "last": round(values[-1], 6)}
