"""Building a Task from `spec.task`, and the deterministic probe subset.

`build_task` accepts the pydantic `stratos.api.spec.TaskSpec` or anything shaped like it: an object
with the attributes, or a plain mapping with snake_case or camelCase keys (a stage program's JSON
config), so the stage programs need not rebuild pydantic models to get their task.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from stratos.tasks.base import Sample, Task
from stratos.tasks.gsm8k import DEFAULT_TEST_URI, DEFAULT_TRAIN_URI, GSM8KTask
from stratos.tasks.jsonl import JsonlTask
from stratos.tasks.mahjong import MahjongTask

BUILTINS = ("mahjong", "gsm8k", "jsonl")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        for key in (name, _camel(name)):
            if key in obj and obj[key] is not None:
                return obj[key]
        return default
    value = getattr(obj, name, None)
    return default if value is None else value


def build_task(task_spec: Any, *, data_root: str | None = None) -> Task:
    """The Task that `spec.task` describes; `data_root` is where the storage volume is mounted.

    For gsm8k without a dataset the data comes from the Hub (openai/gsm8k); with a dataset whose
    prompt field is left at its default ('prompt'), GSM8K's own 'question' field is read.
    Raises ValueError for an unknown builtin or a jsonl task without a dataset.
    """
    builtin = str(_get(task_spec, "builtin", "mahjong")).lower()
    seed = int(_get(task_spec, "seed", 0))
    dataset = _get(task_spec, "dataset")
    if builtin == "mahjong":
        return MahjongTask(
            seed=seed, train_size=_get(task_spec, "train_size"), test_size=_get(task_spec, "test_size")
        )
    if builtin == "gsm8k":
        if dataset is None:
            return GSM8KTask(
                train_uri=DEFAULT_TRAIN_URI, test_uri=DEFAULT_TEST_URI, data_root=data_root, seed=seed
            )
        prompt_field = _get(dataset, "prompt_field", "prompt")
        return GSM8KTask(
            train_uri=_get(dataset, "train"),
            test_uri=_get(dataset, "test"),
            data_root=data_root,
            seed=seed,
            question_field="question" if prompt_field == "prompt" else prompt_field,
            answer_field=_get(dataset, "answer_field", "answer"),
        )
    if builtin == "jsonl":
        if dataset is None or not _get(dataset, "train"):
            raise ValueError("task.builtin 'jsonl' needs task.dataset.train")
        return JsonlTask(
            train_uri=_get(dataset, "train"),
            test_uri=_get(dataset, "test"),
            prompt_field=_get(dataset, "prompt_field", "prompt"),
            answer_field=_get(dataset, "answer_field", "answer"),
            verifier=_get(dataset, "verifier", "exact"),
            pattern=_get(dataset, "pattern"),
            data_root=data_root,
            seed=seed,
        )
    raise ValueError(f"unknown task.builtin {builtin!r}; expected one of {', '.join(BUILTINS)}")


def sample_for_probe(task: Task, n: int, seed: int) -> list[Sample]:
    """`n` training samples chosen by `seed`, in split order: the same for every teacher and student,
    so their accuracies are measured on the same questions."""
    train = task.load("train")
    rng = random.Random(f"stratos-probe:{seed}")
    chosen = sorted(rng.sample(range(len(train)), min(n, len(train))))
    return [train[i] for i in chosen]
