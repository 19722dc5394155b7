"""The dataset file and the state ledger beside it, both append-only and resumable.

``<outputDir>/data/train.jsonl`` holds one kept example per line in trl's conversational format
(``{"id", "messages": [...], "answer", "source"}``), the file the train stage reads as it is.
``<outputDir>/synthesize/state.jsonl`` holds one line per decided item, kept or rejected, with its
reason and the tokens it cost; its first line is a header naming what the data was made for.

Every line is flushed and fsynced before the next item is decided, so a pod killed at any moment
loses at most the item in flight: a restarted Job skips every id already in either file, and the
counts it reports cover both runs. A torn last line (killed mid-write) is cut off on load. The data
line is written before the ledger line; a kill between the two leaves a kept example whose tokens
are not counted, which under-reports cost by one item rather than paying for it twice.

When the header differs (another strategy, task, seed, augmentation or teacher model wrote these
files), the old files are moved aside as ``*.stale`` and the run starts afresh: mixing datasets made
for different specs would silently corrupt the training data.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stratos.contracts.synthesize import usd_sum

log = logging.getLogger("stratos.synthesis")

DATA_FILE = "data/train.jsonl"
STATE_FILE = "synthesize/state.jsonl"


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; a torn last line is cut off the file, bad lines skipped."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("dropping a partial line at the end of %s", path)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _append(fh: IO[str], row: Mapping[str, Any]) -> None:
    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


@dataclass
class Totals:
    """What the files say was decided, over every run that wrote them."""

    kept: dict[str, str] = field(default_factory=dict)  # id -> source ("real" | "synthetic")
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> count
    decided: set[str] = field(default_factory=set)  # ids kept or rejected
    keys: set[str] = field(default_factory=set)  # dedup keys of decided synthetic questions
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    costs: list[float] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        """The total, independent of the order items were decided in (see ``usd_sum``)."""
        return usd_sum(self.costs)

    @property
    def real(self) -> int:
        return sum(1 for s in self.kept.values() if s == "real")

    @property
    def synthetic(self) -> int:
        return sum(1 for s in self.kept.values() if s == "synthetic")

    def add(self, entry: Mapping[str, Any]) -> None:
        """Count one ledger entry (see `Store.record`)."""
        item = str(entry["id"])
        self.decided.add(item)
        if entry.get("kept"):
            self.kept.setdefault(item, str(entry.get("source", "real")))
        else:
            self.rejected[str(entry.get("reason") or "unknown")] += 1
        if entry.get("key"):
            self.keys.add(str(entry["key"]))
        self.attempts += int(entry.get("attempts", 0))
        self.prompt_tokens += int(entry.get("promptTokens", 0))
        self.completion_tokens += int(entry.get("completionTokens", 0))
        self.costs.append(float(entry.get("costUSD", 0.0)))


class Store:
    """Open with ``with Store(output_dir, header) as store:``; `totals` is what is already decided."""

    def __init__(self, output_dir: str | os.PathLike[str], header: Mapping[str, Any]) -> None:
        self.data_path = Path(output_dir) / DATA_FILE
        self.state_path = Path(output_dir) / STATE_FILE
        self.header = dict(header)
        self.totals = Totals()
        self._data: IO[str] | None = None
        self._state: IO[str] | None = None

    def __enter__(self) -> Store:
        self.data_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_lines(self.state_path)
        rows = _read_lines(self.data_path)
        if (entries or rows) and (not entries or entries[0].get("header") != self.header):
            log.warning(
                "%s was written for another configuration; moving the old files aside as *.stale",
                self.state_path,
            )
            for path in (self.data_path, self.state_path):
                if path.exists():
                    path.replace(path.with_name(path.name + ".stale"))
            entries, rows = [], []
        for entry in entries[1:]:
            if "id" in entry:
                self.totals.add(entry)
        for row in rows:  # the dataset is the truth about what was kept
            if "id" in row:
                item = str(row["id"])
                self.totals.decided.add(item)
                self.totals.kept[item] = str(row.get("source", "real"))
        self._data = open(self.data_path, "a", encoding="utf-8")
        self._state = open(self.state_path, "a", encoding="utf-8")
        if not entries:
            _append(self._state, {"header": self.header})
        return self

    def __exit__(self, *exc: object) -> None:
        for fh in (self._data, self._state):
            if fh is not None:
                fh.close()

    def record(self, entry: Mapping[str, Any], row: Mapping[str, Any] | None = None) -> None:
        """Write one decision: the dataset ``row`` when kept, then the ledger ``entry``.

        ``entry``: {"id", "source", "kept", "reason", "key"?, "attempts", "promptTokens",
        "completionTokens", "costUSD"}.
        """
        assert self._data is not None and self._state is not None, "store not open"
        if row is not None:
            _append(self._data, row)
        _append(self._state, entry)
        self.totals.add(entry)
