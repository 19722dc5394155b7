"""Prompts and reply handling that synthesis adds on top of the task plug-in.

The task plug-in owns the training prompt (`Task.messages`), the reverse-reasoning prompt
(`Task.reverse_messages`), extraction and verification. What is here is specific to making data:
asking for a new question in the style of a seed, reading such a reply, telling whether a
reverse-reasoning trace gives away that it was handed the answer, and turning a reply into the
reasoning of a training target.
"""

from __future__ import annotations

import re
from typing import Any

from stratos.llm.client import ChatResult
from stratos.tasks import Sample, Task
from stratos.tasks.base import Message
from stratos.tasks.extract import normalise_text, strip_final_answer

NEW_QUESTION_INSTRUCTION = "Write one new problem of the same kind and difficulty"

_QUESTION = re.compile(r"^[ \t>*#_]*(?:new\s+)?(?:question|problem)[*_ \t]*[:：][*_ \t]*", re.I | re.M)
_SOLUTION = re.compile(r"^[ \t>*#_]*solution[*_ \t]*[:：][*_ \t]*", re.I | re.M)

# A reverse-reasoning trace must read as a forward solution; these phrases say it was not.
_LEAK = re.compile(
    r"\b(?:given|provided|stated|supplied|known|expected)\s+(?:correct\s+|final\s+)?answer\b"
    r"|\banswer\s+(?:was|is|has\s+been)\s+(?:given|provided|stated|supplied)\b(?!\s+by\b)"
    r"|\b(?:we|i)\s+(?:were|was|are|am|have\s+been)\s+(?:told|given)\s+(?:that\s+)?the\s+"
    r"(?:correct\s+|final\s+)?answer\b",
    re.IGNORECASE,
)


def generation_messages(task: Task, seed: Sample) -> list[Message]:
    """Ask for a new question in the style of ``seed``, with its worked solution and answer."""
    user = (
        "Here is an example problem:\n\n"
        f"<example>\n{seed.question}\n</example>\n\n"
        f"{NEW_QUESTION_INSTRUCTION} as the example, but with different details and numbers, so that "
        "it has exactly one correct answer. It must be self-contained. Then solve it step by step.\n"
        "Reply in exactly this format:\n"
        "Question: <the new problem>\n"
        "Solution: <the step-by-step solution>\n"
        f"{task.answer_format}"
    )
    return [{"role": "system", "content": task.system_prompt}, {"role": "user", "content": user}]


def parse_generated(text: str) -> tuple[str, str] | None:
    """(question, solution) from a reply in `generation_messages`' format; None if it is not in it."""
    q = _QUESTION.search(text or "")
    if q is None:
        return None
    s = _SOLUTION.search(text, q.end())
    if s is None:
        return None
    question = text[q.end() : s.start()].strip()
    solution = text[s.end() :].strip()
    if not question or not solution:
        return None
    return question, solution


def leaks_answer(reasoning: str) -> bool:
    """Whether a reverse-reasoning trace says it was handed the answer ("the given answer", ...)."""
    return _LEAK.search(reasoning or "") is not None


def reply_body(reply: ChatResult) -> str:
    """The reasoning a reply offers as a training target.

    The message content when it holds reasoning of its own; otherwise (a reasoning model that keeps
    its chain of thought in a separate field and answers tersely) that chain followed by the content.
    """
    text = reply.text or ""
    if strip_final_answer(text).strip() or not reply.reasoning:
        return text
    return f"{reply.reasoning.strip()}\n\n{text}".strip()


def extract_answer(task: Task, reply: ChatResult) -> str | None:
    """The final answer of a reply: from its content, else from its separate reasoning."""
    extracted = task.extract(reply.text) if reply.text else None
    if extracted is None and reply.reasoning:
        extracted = task.extract(reply.reasoning)
    return extracted


def question_key(sample: Sample) -> str:
    """What makes two questions the same: a Mahjong hand's sorted tiles (hands are shown shuffled),
    otherwise the normalised question text."""
    tiles = sample.meta.get("tiles")
    if isinstance(tiles, list | tuple) and tiles:
        return "tiles:" + ",".join(str(t) for t in sorted(int(t) for t in tiles))
    return "text:" + normalise_text(sample.question)


def target_messages(task: Task, sample: Sample, reasoning: str) -> list[dict[str, Any]]:
    """A training example: the task's own prompt, then the reasoning ending in the canonical answer."""
    return [*task.messages(sample), {"role": "assistant", "content": task.completion(sample, reasoning)}]
