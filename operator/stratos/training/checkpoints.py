"""Finding the checkpoint to resume from, and summarising a run's logged metrics.

A pod killed while the Trainer was writing ``checkpoint-N`` leaves a directory without
``trainer_state.json`` (the Trainer writes it last) or with transformers' JIT-checkpoint sentinel;
resuming from it would fail, so only complete checkpoints count and the newest of those wins (the
Trainer keeps two, so the previous one is still there).
"""

from __future__ import annotations

import json
import os
import re
import shutil
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


#: What a checkpoint holds besides the adapter: the optimizer/scheduler/RNG/trainer state to resume.
_TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state", STATE_FILE, "training_args.bin")


def read_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    data = json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def is_finished(checkpoint: str | os.PathLike[str], max_steps: int | None) -> bool:
    """Whether the checkpoint already reached the run's last step (``max_steps``, else the total the
    Trainer computed from the epochs). Resuming such a checkpoint would make the Trainer take one
    extra step, so a pod restarted after training finished only re-saves the result."""
    state = read_state(checkpoint)
    target = max_steps or int(state.get("max_steps") or 0)
    return target > 0 and int(state.get("global_step") or 0) >= target


def copy_adapter(checkpoint: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """The adapter (and tokenizer) files of a checkpoint, copied to ``target`` without training state."""
    src, dst = Path(checkpoint), Path(target)
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and not item.name.startswith(_TRAINING_STATE):
            shutil.copy2(item, dst / item.name)
    return dst
