"""Tiny models and toy datasets for the training-side tests (thin wrapper over stratos.training.tiny).

``tiny_model(**overrides)`` builds a random tiny model (see ``stratos.training.tiny.TinySpec``) once per
test session and spec, in a temporary directory removed at exit, and returns its path: a
``save_pretrained`` directory the stage programs load like any checkpoint.

The toy task: eight animals, each with a colour (``TOY_FACTS``), as a ``jsonl`` task whose test file is
its train file, so "accuracy" after training measures whether the model learned the mapping it was
trained on (memorisation, on purpose: a random-initialised model cannot generalise to unseen facts).

On two shared CPU cores torch's default of one thread per core spins and slows tiny matmuls by ~50x;
``one_thread()`` and ``SUBPROCESS_ENV`` keep it to one thread.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TOY_FACTS = {
    "cat": "red",
    "dog": "green",
    "fox": "blue",
    "owl": "yellow",
    "bee": "red",
    "ant": "green",
    "cow": "blue",
    "pig": "yellow",
}

#: Environment for stage programs run as subprocesses: one torch thread, no tokenizer threads.
SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

_ROOT: Path | None = None


def _root() -> Path:
    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="stratos-tiny-models-"))
        atexit.register(shutil.rmtree, _ROOT, True)
    return _ROOT


@functools.cache
def _cached(key: str) -> Path:
    from stratos.training.tiny import build_tiny_model

    overrides: dict[str, Any] = json.loads(key)
    name = "-".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "default"
    return build_tiny_model(_root() / name.replace("/", "_"), **overrides)


def tiny_model(**overrides: Any) -> Path:
    """Path of a tiny model built with ``TinySpec`` fields ``overrides`` (cached for the session)."""
    return _cached(json.dumps(overrides, sort_keys=True))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def subprocess_env() -> dict[str, str]:
    return {**os.environ, **SUBPROCESS_ENV}


def write_toy_task(directory: Path) -> dict[str, Any]:
    """Write the toy facts as ``toy.jsonl`` and return the TaskSpec JSON of a jsonl task over them."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "toy.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for animal, colour in TOY_FACTS.items():
            fh.write(json.dumps({"prompt": f"What is the colour of the {animal}?", "answer": colour}) + "\n")
    return {"builtin": "jsonl", "dataset": {"train": str(path), "test": str(path)}}


def write_sft_dataset(
    directory: Path,
    task_spec: dict[str, Any],
    *,
    name: str = "train.jsonl",
    split: str = "train",
    reasoning: bool = False,
) -> Path:
    """The synthesize stage's output format for ``task_spec``'s samples: conversational rows with the
    canonical completion (``Task.completion``), plus ``id`` and ``answer``. With ``reasoning`` the
    Mahjong task's programmatic explanation precedes the answer line."""
    from stratos.tasks import build_task

    task = build_task(task_spec)
    path = directory / name
    directory.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for sample in task.load(split):  # type: ignore[arg-type]
            explain = getattr(task, "explain", None)
            thought = explain(sample) if reasoning and explain else None
            answer = {"role": "assistant", "content": task.completion(sample, thought)}
            messages = [*task.messages(sample), answer]
            fh.write(
                json.dumps(
                    {"messages": messages, "id": sample.id, "answer": sample.answer}, ensure_ascii=False
                )
                + "\n"
            )
    return path
