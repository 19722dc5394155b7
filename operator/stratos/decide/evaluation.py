"""How the trained student is evaluated and served, from what it was trained on. Pure.

- Decoding budget: held-out answers are decoded greedily up to a token budget. Too small and a student
  that learnt to reason at length is cut off before its answer line (scored wrong for the budget's
  sake); too large and a student that never stops costs minutes per sample. The budget is what the
  student was trained to write, the longest target of its training set in its own tokens as far as it
  fitted after its prompt in the training sequence length (the train stage measures it), plus a
  quarter for phrasing variation, at least ``EVAL_MIN_NEW_TOKENS`` and at most the sequence length.
- Merged weights: an engine that cannot load an adapter (``transformers serve``), or a base model no
  engine can load with an adapter (a GGUF file: vLLM's GGUF loader is experimental and takes no LoRA
  adapters), is served from full weights with the adapter merged in, written by the train stage.
"""

from __future__ import annotations

import math

#: Headroom over the longest trained target.
EVAL_HEADROOM = 1.25
#: Floor of the budget: room for an answer line even when the targets were tiny.
EVAL_MIN_NEW_TOKENS = 32


def evaluation_max_new_tokens(longest_target: int | None, *, sequence_length: int) -> int:
    """Tokens to decode per held-out answer; ``longest_target`` unknown (None or 0): ``sequence_length``."""
    if not longest_target:
        return sequence_length
    budget = max(EVAL_MIN_NEW_TOKENS, math.ceil(longest_target * EVAL_HEADROOM))
    return min(sequence_length, budget)


def needs_merged_weights(engine: str, model_uri: str) -> bool:
    """Whether training must also write merged weights for the serving engine."""
    return engine == "transformers" or is_gguf_uri(model_uri)


def is_gguf_uri(uri: str) -> bool:
    """Whether a model URI names a GGUF file (by its name: the file itself is not looked at)."""
    return uri.strip().rstrip("/").lower().endswith(".gguf")
