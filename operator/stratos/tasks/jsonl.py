"""The `jsonl` task: the user's own data, one JSON object per row, with a chosen verifier.

`prompt_field` and `answer_field` name the row's fields (a dotted name such as `meta.answer` reaches
into nested objects). Verifier kinds:

- `exact`: equal after case folding, collapsing whitespace and dropping quotes and a final full stop;
- `numeric`: equal as numbers ('1,234', '$1234', '1234.0' and '1234 units' all match 1234); an answer
  field in GSM8K form ('…#### 42') counts as its number;
- `set`: the same items in any order; items are separated by commas or semicolons when there are any,
  otherwise by whitespace, and compared like `exact`;
- `regex`: `pattern` is a Python regular expression, used in one of two ways:
  * it *extracts* the answer: the last match in the model's output (after any <think> block) gives
    the group named `answer`, else the first group, else the whole match; that is then compared
    like `exact` with the sample's answer (e.g. `ANSWER: ([A-D])` for multiple choice);
  * with a literal `{answer}` in it, the pattern instead *checks* the stated answer (found as for
    `exact`): the answer must fullmatch the pattern after `{answer}` is replaced by the sample's
    answer, escaped (e.g. `(?i)\\s*{answer}\\s*(dollars)?` accepts "4.50 dollars" for 4.50).

Without a test URI a seeded 10% of the training rows is held out for evaluation.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from stratos.data.sources import DataSourceError, iter_records
from stratos.tasks.base import Sample, Split, Task, split_holdout
from stratos.tasks.extract import (
    answer_span,
    extract_number,
    format_number,
    normalise_text,
    numbers_equal,
    parse_number,
    strip_thinking,
)

VerifierKind = Literal["exact", "numeric", "set", "regex"]
VERIFIERS: tuple[str, ...] = ("exact", "numeric", "set", "regex")

_FORMATS = {
    "numeric": "End your response with a final line of the form 'The answer is <number>'.",
    "set": "End your response with a final line of the form 'The answer is <items separated by commas>'.",
}


def field_value(row: dict[str, Any], name: str) -> Any:
    """row[name], or a nested value for a dotted name; KeyError when absent."""
    if name in row:
        return row[name]
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(name)
        value = value[part]
    return value


def _answer_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def set_items(text: str) -> set[str]:
    """The normalised items of a list answer ('a, b and c' or 'a b c')."""
    text = text.strip().rstrip(".")
    parts = re.split(r"\s*(?:[,;]|\band\b)\s*", text) if re.search(r"[,;]", text) else text.split()
    return {normalise_text(p) for p in parts if p.strip()}


class JsonlTask(Task):
    """User data with configurable fields and verifier (see the module docstring)."""

    name = "jsonl"

    def __init__(
        self,
        *,
        train_uri: str,
        test_uri: str | None = None,
        prompt_field: str = "prompt",
        answer_field: str = "answer",
        verifier: str = "exact",
        pattern: str | None = None,
        data_root: str | None = None,
        seed: int = 0,
        holdout: float = 0.1,
    ):
        if verifier not in VERIFIERS:
            raise ValueError(f"unknown verifier {verifier!r}; expected one of {', '.join(VERIFIERS)}")
        self.train_uri = train_uri
        self.test_uri = test_uri
        self.prompt_field = prompt_field
        self.answer_field = answer_field
        self.verifier = verifier
        self.data_root = data_root
        self.seed = seed
        self.holdout = holdout
        self.regex: re.Pattern[str] | None = None
        self.pattern = pattern
        if verifier == "regex":
            if not pattern:
                raise ValueError("the regex verifier needs a pattern")
            try:
                self.regex = re.compile(pattern.replace("{answer}", "ANSWER"))
            except re.error as e:
                raise ValueError(f"invalid regex pattern {pattern!r}: {e}") from None
        self.answer_format = _FORMATS.get(verifier, Task.answer_format)
        self._cache: dict[str, list[Sample]] = {}

    # Loading -------------------------------------------------------------------------------------

    def make_sample(self, uri: str, split: str, index: int, line: int, row: dict[str, Any]) -> Sample:
        try:
            prompt = field_value(row, self.prompt_field)
            answer = field_value(row, self.answer_field)
        except KeyError as e:
            raise DataSourceError(
                uri, f"row has no field {e.args[0]!r} (fields: {', '.join(sorted(row))})", line=line
            ) from None
        text = _answer_text(answer).strip()
        if self.verifier == "numeric":
            value = parse_number(text.rpartition("####")[2])
            if value is None:
                raise DataSourceError(uri, f"answer {text[:60]!r} is not a number", line=line)
            text = format_number(value)
        return Sample(
            id=f"{self.name}-{split}-{index:05d}",
            question=str(prompt).strip(),
            answer=text,
            meta={"line": line},
        )

    def _read(self, uri: str, split: str) -> list[Sample]:
        samples = [
            self.make_sample(uri, split, i, line, row)
            for i, (line, row) in enumerate(iter_records(uri, data_root=self.data_root))
        ]
        if not samples:
            raise DataSourceError(uri, "no rows")
        return samples

    def load(self, split: Split) -> list[Sample]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        if split not in self._cache:
            if self.test_uri:
                self._cache[split] = self._read(self.train_uri if split == "train" else self.test_uri, split)
            else:
                train, test = split_holdout(
                    self._read(self.train_uri, "train"), fraction=self.holdout, seed=self.seed
                )
                self._cache.update(train=train, test=test)
        return list(self._cache[split])

    # Extraction and verification ---------------------------------------------------------------------

    def _checks(self) -> bool:
        """Whether the regex checks a stated answer (`{answer}` form) rather than extracting one."""
        return "{answer}" in (self.pattern or "")

    def extract(self, text: str) -> str | None:
        if not text:
            return None
        if self.regex is not None and not self._checks():
            matches = list(self.regex.finditer(strip_thinking(text)))
            if not matches:
                return None
            m = matches[-1]
            if "answer" in self.regex.groupindex:
                value = m.group("answer")
            else:
                value = m.group(1) if self.regex.groups else m.group(0)
            return value.strip() if value is not None else None
        if self.verifier == "numeric":
            return extract_number(text)
        return answer_span(text)

    def verify(self, predicted: str | None, sample: Sample) -> bool:
        if predicted is None:
            return False
        if self.verifier == "numeric":
            return numbers_equal(predicted, sample.answer)
        if self.verifier == "set":
            got = set_items(predicted)
            return bool(got) and got == set_items(sample.answer)
        if self.verifier == "regex" and self._checks():
            assert self.pattern is not None
            pattern = self.pattern.replace("{answer}", re.escape(sample.answer))
            return re.fullmatch(pattern, predicted.strip()) is not None
        return normalise_text(predicted) == normalise_text(sample.answer)
