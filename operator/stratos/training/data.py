"""The training dataset (the synthesize stage's JSONL) in the shape each trl trainer expects.

Input: one JSON object per line in trl's conversational format,
``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...], "id": ..., "answer": ...}``,
where the last message is the assistant's target (the teacher's reasoning and answer line) and
``answer`` is the canonical answer the task verifier accepts. Output per algorithm:

- ``sft``: prompt-completion conversational rows (``prompt`` = every message before the final assistant
  turn, ``completion`` = that turn), so SFTTrainer puts the loss on the completion only, whatever the
  model's chat template (assistant-only masks need ``{% generation %}`` markers most templates lack);
- ``grpo``: ``prompt`` plus ``answer`` (handed to the reward function by GRPOTrainer) and ``id``;
- ``dpo``: ``prompt``/``chosen``/``rejected``. Rows that already carry ``chosen`` and ``rejected``
  (strings or assistant message lists, with ``prompt`` or ``messages`` for the question) are used as
  they are. Otherwise ``chosen`` is the teacher's answer (the row's assistant turn) and ``rejected`` is
  the student's own greedy answer to the same prompt, generated before training; rows where the
  student's answer already verifies as correct (or equals the teacher's) are dropped, since there is
  nothing to prefer;
- ``kd``: ``messages`` as they are (GKDTrainer's ChatML collator splits prompt and completion).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from stratos.contracts.stage_io import StageError

Message = dict[str, str]
Row = dict[str, Any]


class DatasetError(StageError):
    """The training dataset is missing, malformed or empty."""


def read_rows(path: str | Path) -> list[Row]:
    """The JSONL rows; blank lines skipped; a malformed line is an error naming its line number."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"training dataset {p} does not exist") from None
    except OSError as err:
        raise DatasetError(f"cannot read training dataset {p}: {err.strerror or err}") from None
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise DatasetError(f"training dataset {p}, line {number}: not JSON ({err})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"training dataset {p}, line {number}: expected a JSON object")
        rows.append(row)
    if not rows:
        raise DatasetError(f"training dataset {p} has no rows")
    return rows


def _messages(row: Row, where: str) -> list[Message]:
    msgs = row.get("messages")
    well_formed = (
        isinstance(msgs, list)
        and bool(msgs)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs
        )
    )
    if not well_formed:
        raise DatasetError(f"{where}: expected 'messages', a list of {{role, content}} objects")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]  # type: ignore[union-attr]


def split_turns(row: Row, where: str = "row") -> tuple[list[Message], list[Message]]:
    """(prompt messages, [final assistant message]) of a conversational row."""
    msgs = _messages(row, where)
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
        raise DatasetError(f"{where}: the last message must be the assistant's answer, after a prompt")
    return msgs[:-1], msgs[-1:]


def sft_dataset(rows: Sequence[Row]) -> Dataset:
    prompts, completions = [], []
    for i, row in enumerate(rows):
        prompt, completion = split_turns(row, f"row {i + 1}")
        prompts.append(prompt)
        completions.append(completion)
    return Dataset.from_dict({"prompt": prompts, "completion": completions})


def grpo_dataset(rows: Sequence[Row], *, extract: Callable[[str], str | None]) -> Dataset:
    """Prompts with the answer the reward checks: the row's ``answer``, else the one its target states."""
    prompts, answers, ids = [], [], []
    for i, row in enumerate(rows):
        msgs = _messages(row, f"row {i + 1}")
        prompt = msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs
        answer = row.get("answer")
        if answer is None and msgs[-1]["role"] == "assistant":
            answer = extract(msgs[-1]["content"])
        if answer is None or not prompt:
            raise DatasetError(f"row {i + 1}: GRPO needs an 'answer' (or an assistant turn that states one)")
        prompts.append(prompt)
        answers.append(str(answer))
        ids.append(str(row.get("id", i)))
    return Dataset.from_dict({"prompt": prompts, "answer": answers, "id": ids})


def _as_turn(value: Any, where: str) -> list[Message]:
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        return [
            {"role": str(m.get("role", "assistant")), "content": str(m.get("content", ""))} for m in value
        ]
    raise DatasetError(f"{where}: 'chosen'/'rejected' must be a string or a list of messages")


def has_preferences(rows: Sequence[Row]) -> bool:
    return all("chosen" in r and "rejected" in r for r in rows)


def dpo_dataset(
    rows: Sequence[Row],
    *,
    student_answers: Callable[[list[list[Message]]], list[str]] | None = None,
    is_correct: Callable[[str, Row], bool] | None = None,
) -> tuple[Dataset, int]:
    """(preference dataset, rows dropped because the student was already right)."""
    prompts: list[list[Message]] = []
    chosen: list[list[Message]] = []
    rejected: list[list[Message]] = []
    if has_preferences(rows):
        for i, row in enumerate(rows):
            where = f"row {i + 1}"
            if isinstance(row.get("prompt"), list):
                prompt = _as_turn(row["prompt"], where)
            else:
                prompt = split_turns(row, where)[0] if row.get("messages") else []
            if not prompt:
                raise DatasetError(f"{where}: a preference row needs 'prompt' (messages) or 'messages'")
            prompts.append(prompt)
            chosen.append(_as_turn(row["chosen"], where))
            rejected.append(_as_turn(row["rejected"], where))
        return Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected}), 0
    if student_answers is None:
        raise DatasetError("the dataset has no chosen/rejected pairs and no student to answer its prompts")
    pairs = [split_turns(row, f"row {i + 1}") for i, row in enumerate(rows)]
    answers = student_answers([p for p, _ in pairs])
    dropped = 0
    for row, (prompt, target), answer in zip(rows, pairs, answers, strict=True):
        same = answer.strip() == target[0]["content"].strip()
        if same or (is_correct is not None and is_correct(answer, row)):
            dropped += 1
            continue
        prompts.append(prompt)
        chosen.append(target)
        rejected.append([{"role": "assistant", "content": answer}])
    if not prompts:
        raise DatasetError("the student already answers every training prompt correctly; DPO has no pairs")
    return Dataset.from_dict({"prompt": prompts, "chosen": chosen, "rejected": rejected}), dropped


def prompts_and_targets(rows: Sequence[Row]) -> list[tuple[list[Message], str]]:
    """What the student is trained to write after which prompt: each row's final assistant turn, or its
    ``chosen`` side for a preference row (what DPO pushes it towards)."""
    out = []
    for i, row in enumerate(rows):
        where = f"row {i + 1}"
        if "chosen" in row:
            prompt = _as_turn(row["prompt"], where) if isinstance(row.get("prompt"), list) else []
            if not prompt and row.get("messages"):
                prompt = split_turns(row, where)[0]
            out.append((prompt, "".join(m["content"] for m in _as_turn(row["chosen"], where))))
        else:
            prompt, target = split_turns(row, where)
            out.append((prompt, target[0]["content"]))
    return out


def longest_target_tokens(
    rows: Sequence[Row],
    count: Callable[[str], int],
    *,
    cap: int,
    count_prompt: Callable[[list[Message]], int] | None = None,
) -> int:
    """Tokens of the longest completion the student learnt to write: a target (``count`` tokenises it)
    plus the end-of-turn token after it, cut where its sequence reaches ``cap`` (the training sequence
    length, which truncates prompt plus completion) after the prompt's ``count_prompt`` tokens."""
    longest = 0
    for prompt, target in prompts_and_targets(rows):
        room = cap - count_prompt(prompt) if count_prompt is not None else cap
        longest = max(longest, min(count(target) + 1, max(0, room)))
    return longest


def kd_dataset(rows: Sequence[Row]) -> Dataset:
    messages = []
    for i, row in enumerate(rows):
        prompt, completion = split_turns(row, f"row {i + 1}")
        messages.append(prompt + completion)
    return Dataset.from_dict({"messages": messages})
