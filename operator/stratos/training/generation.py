"""Batched greedy generation from chat messages, with the decode speed it achieved.

Used by the student probe, the evaluation stage and the DPO data builder. Prompts are rendered with
the model's own chat template (``add_generation_prompt=True``), sorted by length so a batch wastes
little padding (results come back in the input order), left-padded, and decoded greedily, so the same
model and prompt give the same answer every time. The speed reported is generated tokens (up to and
including each sequence's end-of-turn token) per second of ``generate`` wall time at the batch size
used: throughput on this node, prefill included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase

log = logging.getLogger("stratos.training.generation")

Messages = Sequence[dict[str, str]]


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int


@dataclass
class GenerationStats:
    sequences: int = 0
    new_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def eos_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a turn: the model's generation-config eos ids plus the tokenizer's eos."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(int(i) for i in configured)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> str:
    return str(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False))


def _count_new(row: torch.Tensor, stop: set[int], pad: int | None) -> int:
    values = row.tolist()
    for i, token in enumerate(values):
        if token in stop:
            return i + 1
    return sum(1 for t in values if t != pad) if pad is not None and pad not in stop else len(values)


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Generation], GenerationStats]:
    """Greedy completions of ``prompts`` (chat messages), in input order, and the speed measured."""
    side, training = tokenizer.padding_side, bool(getattr(model, "training", False))
    tokenizer.padding_side = "left"
    model.eval()  # no dropout while answering (the DPO builder generates with a model about to train)
    try:
        return _generate(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress
        )
    finally:
        tokenizer.padding_side = side
        model.train(training)


def _generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[Generation], GenerationStats]:
    texts = [render_prompt(tokenizer, p) for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    stop = eos_token_ids(model, tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop or None,
    )
    device = getattr(model, "device", torch.device("cpu"))
    results: dict[int, Generation] = {}
    stats = GenerationStats()
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        _sync(device)
        began = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        _sync(device)
        stats.seconds += time.perf_counter() - began
        new = out[:, enc["input_ids"].shape[1] :].cpu()
        for row, i in zip(new, idx, strict=True):
            count = _count_new(row, set(stop), tokenizer.pad_token_id)
            text = str(tokenizer.decode(row[:count], skip_special_tokens=True))
            results[i] = Generation(text=text, new_tokens=count)
            stats.new_tokens += count
        stats.sequences += len(idx)
        if progress is not None:
            progress(stats.sequences, len(order))
    return [results[i] for i in range(len(texts))], stats


def _sync(device: Any) -> None:
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()
