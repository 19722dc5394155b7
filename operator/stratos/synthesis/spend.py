"""The synthesize stage's spend ledger: what its teacher requests cost, every run of it together.

``<outputDir>/synthesize/spend.json`` holds one ``SynthesisSpend`` (USD, prompt and completion tokens),
rewritten atomically after every teacher response. The state ledger (``store``) counts an item's tokens
only once the item is decided, so a run killed mid-item, or one that fails, would otherwise leave paid
requests uncounted: this file counts each request as its response arrives. A retried run starts its
budget cap from it, and the stage's result, or its failure result, reports it for the controller to
charge. Unlike the dataset it is never moved aside: what was spent stays spent.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from stratos.contracts.synthesize import SynthesisSpend, usd_sum

log = logging.getLogger("stratos.synthesis")

SPEND_FILE = "synthesize/spend.json"


class SpendLedger:
    """Open with ``SpendLedger(output_dir, floor)``: the recorded spend, at least ``floor`` (what the
    state ledger already counts, for files written before this ledger existed)."""

    def __init__(self, output_dir: str | os.PathLike[str], floor: SynthesisSpend | None = None) -> None:
        self.path = Path(output_dir) / SPEND_FILE
        self.spent = read_spend(self.path).at_least(floor or SynthesisSpend())

    def add(self, prompt_tokens: int, completion_tokens: int, usd: float) -> None:
        """Count one response and write the new total (atomically: a kill leaves the old or the new)."""
        s = self.spent
        self.spent = SynthesisSpend(
            cost_usd=usd_sum((s.cost_usd, usd)),
            prompt_tokens=s.prompt_tokens + prompt_tokens,
            completion_tokens=s.completion_tokens + completion_tokens,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self.spent.report()))
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.path)


def read_spend(path: Path) -> SynthesisSpend:
    """The spend recorded at ``path``; nothing spent when there is no (readable) record."""
    try:
        return SynthesisSpend.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return SynthesisSpend()
    except (OSError, ValidationError, ValueError) as err:
        log.warning("unreadable spend ledger %s (%s): counting from the state ledger", path, err)
        return SynthesisSpend()
