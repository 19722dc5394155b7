"""Vocabulary check: before any teacher is called, do white-box distillation's models share one vocabulary?

``python -m stratos.workloads.vocab_check --config CONFIG [--result /dev/termination-log]``

White-box KD (``distillation.algorithm: white-box-kd``) compares the teacher's and the student's
next-token distributions position by position, so every pair that could be trained (any teacher may
be selected, any student may be trained when an earlier one misses ``minAccuracy``) must map the same
tokens to the same ids and have the same number of logits. The controller runs this stage first, so a
mismatch stops the job before teacher evaluation, synthesis and training are paid for. Only configs
and tokenizers are read (CPU, seconds), never weights.

A mismatch is a finding, not a failure: the stage succeeds and reports ``shared: false`` with a message
per pair; a model that cannot be read at all fails the stage (``kind: ModelUnavailable``).

Config (camelCase JSON)::

    {"students": [{"name": "s1", "uri": "/models/s1"}], "teachers": [{"name": "t1", "uri": "/models/t1"}],
     "dataRoot": "/var/lib/stratos"}

Result::

    {"ok": true, "shared": false, "checked": 2,
     "mismatches": ["teacher t1 / student s1: the student ... has 32000 tokens / 32000 logits and ..."]}
"""

from __future__ import annotations

import logging
from typing import Any

from stratos.contracts.vocab_check import NamedModel, VocabCheckConfig, VocabCheckResult
from stratos.workloads.common import run_stage

log = logging.getLogger("stratos.workloads.vocab_check")


def vocab_check(config: VocabCheckConfig) -> dict[str, Any]:
    from stratos.training.models import quiet_libraries, resolve_model_uri
    from stratos.training.vocab import mismatch, read_vocabulary

    quiet_libraries()

    def vocabulary(model: NamedModel) -> Any:
        vocab = read_vocabulary(resolve_model_uri(model.uri, data_root=config.data_root))
        log.info("%s: %d tokens, %d logits", model.name, len(vocab.tokens), vocab.logits)
        return vocab

    students = {s.name: vocabulary(s) for s in config.students}
    teachers = {t.name: vocabulary(t) for t in config.teachers}
    mismatches = [
        f"teacher {t} / student {s}: {problem}"
        for t, tv in teachers.items()
        for s, sv in students.items()
        if (problem := mismatch(sv, tv)) is not None
    ]
    for line in mismatches:
        log.warning("%s", line)
    return VocabCheckResult(
        shared=not mismatches, checked=len(students) * len(teachers), mismatches=mismatches
    ).dump()


def main(argv: list[str] | None = None) -> int:
    return run_stage("vocab_check", VocabCheckConfig, vocab_check, argv)


if __name__ == "__main__":
    raise SystemExit(main())
