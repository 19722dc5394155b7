"""The task plug-in interface: load samples, prompt, extract an answer, verify it.

Every stage that talks to a model (teacher-eval, student-probe, synthesize, train, evaluate) goes
through a Task, so prompting and scoring are the same everywhere. Prompts always ask for a closing
"The answer is …" line, because that is the marker `stratos.tasks.extract` finds most reliably.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from stratos.tasks.extract import strip_final_answer

Split = Literal["train", "test"]
Message = dict[str, str]


@dataclass(frozen=True)
class Sample:
    """One task instance. `answer` is canonical: the form `verify` and training targets use."""

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class Task(ABC):
    """A task plug-in. Subclasses set `name` and `system_prompt` and implement the abstract methods."""

    name: str = "task"
    #: Rules of the task, sent as the system message of every prompt.
    system_prompt: str = "You are a careful problem solver."
    #: How the final answer must be written; appended to every request.
    answer_format: str = "End your response with a final line of the form 'The answer is <answer>'."

    @abstractmethod
    def load(self, split: Split) -> list[Sample]:
        """The samples of a split, in a stable order with stable ids."""

    @abstractmethod
    def extract(self, text: str) -> str | None:
        """The final answer stated in a model's output, in canonical form; None when there is none."""

    @abstractmethod
    def verify(self, predicted: str | None, sample: Sample) -> bool:
        """Whether an extracted answer is correct for the sample."""

    def messages(self, sample: Sample, *, reasoning: str | None = None) -> list[Message]:
        """Chat messages asking for the answer to `sample`.

        With `reasoning` (a teacher's solution), its steps go into the prompt as a hint, the way the
        paper probes students with "structured reasoning steps used as prompts" (Table 1). The
        teacher's closing answer line is removed, so the probe measures whether the student can
        follow reasoning, not whether it can copy an answer.
        """
        user = sample.question
        if reasoning:
            hint = strip_final_answer(reasoning)
            if hint:
                user += (
                    "\n\nHere are reasoning steps from an expert that lead to the solution. "
                    "Follow them, check them, and finish the solution yourself.\n\n"
                    f"<reasoning>\n{hint}\n</reasoning>"
                )
        user += "\n\nThink step by step. " + self.answer_format
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]

    def reverse_messages(self, sample: Sample) -> list[Message]:
        """Chat messages giving the question and its known correct answer and asking for the reasoning.

        This is knowledge injection's reverse reasoning: a teacher that cannot solve the task forward
        can still explain how the answer follows. The explanation must read as a forward solution
        (no "since we were told the answer") and end with the answer line, so it can be used as an
        SFT target as it is.
        """
        user = (
            f"{sample.question}\n\n"
            f"The correct answer is: {sample.answer}\n\n"
            "Write the step-by-step reasoning that leads from the question to this answer, as a "
            "solution that works it out from the question alone. Do not say that the answer was "
            "given to you. Make every step checkable. "
            f"End with a final line of the form 'The answer is {sample.answer}'."
        )
        return [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": user}]

    def score(self, text: str | None, sample: Sample) -> bool:
        """Extract then verify: the one call a stage needs to grade a model's output."""
        return self.verify(self.extract(text) if text else None, sample)

    def completion(self, sample: Sample, reasoning: str | None = None) -> str:
        """A training target: `reasoning` (when given) followed by the canonical answer line.

        Any closing answer statement in the reasoning is replaced by the canonical one, so every
        target ends in the form the prompts ask for (callers verify the reasoning's answer first).
        """
        body = strip_final_answer(reasoning).strip() if reasoning else ""
        line = f"The answer is {sample.answer}."
        return f"{body}\n\n{line}" if body else line


def split_holdout(samples: list[Sample], *, fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(train, test) when a dataset has no test file: a seeded, order-preserving holdout.

    At least one sample is held out when there are two or more, so evaluation never runs on nothing.
    """
    n = len(samples)
    k = min(n - 1, max(1, round(n * fraction))) if n >= 2 else 0
    held = set(random.Random(f"stratos-holdout:{seed}").sample(range(n), k))
    train = [s for i, s in enumerate(samples) if i not in held]
    return train, [s for i, s in enumerate(samples) if i in held]
