"""The built-in GSM8K task: grade-school math word problems with numeric answers.

Rows are GSM8K's JSONL: {"question": ..., "answer": "<worked solution>\\n#### 42"}. The canonical
answer is the number after '####'; the worked solution is kept in `meta["solution"]`. Verification is
numeric, so '1,234', '$1234', '1234.0' and '1234 dollars' all match 1234.
"""

from __future__ import annotations

from typing import Any

from stratos.data.sources import DataSourceError
from stratos.tasks.base import Sample
from stratos.tasks.extract import format_number, parse_number
from stratos.tasks.jsonl import JsonlTask

#: Where GSM8K lives when the spec names no dataset (needs the `datasets` package and the Hub).
DEFAULT_TRAIN_URI = "hf://datasets/openai/gsm8k/main@train"
DEFAULT_TEST_URI = "hf://datasets/openai/gsm8k/main@test"
#: The small hand-written sample shipped with stratos, for tests and offline demos.
SAMPLE_URI = "builtin://gsm8k-sample.jsonl"

SYSTEM_PROMPT = (
    "You solve grade-school math word problems. Reason step by step, show each calculation, "
    "and give the final answer as a single number."
)


def parse_solution(uri: str, line: int, answer: object) -> tuple[str, str]:
    """(worked solution, canonical number) from a GSM8K answer field."""
    text = str(answer)
    solution, sep, final = text.rpartition("####")
    if not sep:
        solution, final = "", text
    value = parse_number(final)
    if value is None:
        raise DataSourceError(uri, f"answer {final.strip()[:60]!r} has no number after '####'", line=line)
    return solution.strip(), format_number(value)


class GSM8KTask(JsonlTask):
    """GSM8K: numeric verification; without a test URI, a seeded 10% of train is held out."""

    name = "gsm8k"
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        *,
        train_uri: str = DEFAULT_TRAIN_URI,
        test_uri: str | None = DEFAULT_TEST_URI,
        data_root: str | None = None,
        seed: int = 0,
        question_field: str = "question",
        answer_field: str = "answer",
        holdout: float = 0.1,
    ):
        super().__init__(
            train_uri=train_uri,
            test_uri=test_uri,
            prompt_field=question_field,
            answer_field=answer_field,
            verifier="numeric",
            data_root=data_root,
            seed=seed,
            holdout=holdout,
        )

    def make_sample(self, uri: str, split: str, index: int, line: int, row: dict[str, Any]) -> Sample:
        for f in (self.prompt_field, self.answer_field):
            if f not in row:
                raise DataSourceError(
                    uri, f"row has no field {f!r} (fields: {', '.join(sorted(row))})", line=line
                )
        solution, answer = parse_solution(uri, line, row[self.answer_field])
        return Sample(
            id=f"gsm8k-{split}-{index:05d}",
            question=str(row[self.prompt_field]).strip(),
            answer=answer,
            meta={"solution": solution, "line": line},
        )
