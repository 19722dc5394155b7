"""Vocabularies of models, for white-box distillation: the teacher's and the student's next-token
distributions are compared position by position, so both must map the same tokens to the same ids and
have the same number of logits. Only configs and tokenizers are read, never weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from stratos.contracts.stage_io import StageError
from stratos.training.models import ModelLoadError, ModelRef, load_config, load_tokenizer


class VocabularyMismatch(StageError):
    """White-box KD was asked for with a teacher whose vocabulary is not the student's."""


@dataclass(frozen=True)
class Vocabulary:
    uri: str
    tokens: dict[str, int]
    logits: int


def read_vocabulary(ref: ModelRef) -> Vocabulary:
    """The tokenizer's token -> id map and the model's output size (``vocab_size`` of its text config)."""
    try:
        logits = int(load_config(ref).get_text_config().vocab_size)
    except (AttributeError, TypeError, ValueError) as err:
        raise ModelLoadError(f"cannot read the vocabulary size of {ref.uri}: {err}") from None
    return Vocabulary(ref.uri, dict(load_tokenizer(ref).get_vocab()), logits)


def differing_ids(a: dict[str, int], b: dict[str, int]) -> int:
    """Tokens whose id differs between the two maps, counting tokens only one of them has."""
    return sum(1 for tok, i in a.items() if b.get(tok) != i) + sum(1 for tok in b if tok not in a)


def mismatch(student: Vocabulary, teacher: Vocabulary) -> str | None:
    """Why the pair cannot be distilled white-box, or None when they share one vocabulary."""
    differing = differing_ids(student.tokens, teacher.tokens)
    if student.logits == teacher.logits and not differing:
        return None
    return (
        f"the student {student.uri} has {len(student.tokens)} tokens / {student.logits} logits and the "
        f"teacher {teacher.uri} has {len(teacher.tokens)} tokens / {teacher.logits} logits "
        f"({differing} token ids differ)"
    )


def check_vocabularies(student: ModelRef, teacher: ModelRef) -> None:
    """Raise ``VocabularyMismatch`` unless the pair shares one vocabulary."""
    problem = mismatch(read_vocabulary(student), read_vocabulary(teacher))
    if problem is not None:
        raise VocabularyMismatch(
            f"white-box-kd needs the teacher and the student to share one vocabulary, but {problem}. Pick "
            "a teacher from the student's model family, or use sft-lora on the teacher's generated data "
            "(black-box distillation)."
        )
