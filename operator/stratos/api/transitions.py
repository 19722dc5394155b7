"""Which spec edits the API server accepts once a job has started (CEL transition rules).

A decision is made once and then built on (teacher evaluations feed the data, the data feeds training),
so the fields decisions read are immutable once the pipeline has started: the API server refuses the
edit (``self == oldSelf`` per field, on the root object so the rule can see whether the job started),
rather than the operator accepting it, advancing ``observedGeneration`` and ignoring it. The pipeline
has started once ``status.server`` or ``status.teacher`` is set; before that (no feasible node yet, an
invalid spec found before any decision) every field can still be fixed.

Fields re-planned on every reconcile stay editable: ``suspend``, ``serving`` (the endpoint follows it;
only the engine cannot move from vllm to transformers once training has started without merged
weights, since the transformers engine loads nothing else), ``requirements.budget`` (checked before
every spending stage) and ``retries`` (applies to stage Jobs created afterwards).
"""

from __future__ import annotations

from typing import Any

STARTED = "has(oldSelf.status) && (has(oldSelf.status.server) || has(oldSelf.status.teacher))"

#: Spec sections fixed once the pipeline has started, with what depends on them.
FROZEN_SECTIONS: dict[str, str] = {
    "task": "teacher evaluations, student probes and the data were made for it",
    "teachers": "the teacher was selected among them and the data was made with it",
    "students": "the student was selected among them and is trained",
    "servers": "the server was selected with them",
    "distillation": "the strategy, the data and the training follow it",
    "storage": "every stage's files are there",
}
#: requirements.* fields fixed once started (budget stays editable).
FROZEN_REQUIREMENTS = (
    "minAccuracy",
    "minTokensPerSecond",
    "maxTrainingTime",
    "maxHourlyCost",
    "maxLatencyMs",
    "weights",
)


def _same(path: str) -> str:
    """CEL: ``path`` is unchanged (both absent, or both present and equal)."""
    new, old = f"self.{path}", f"oldSelf.{path}"
    return f"(has({new}) ? (has({old}) && {new} == {old}) : !has({old}))"


def _frozen(path: str, why: str) -> dict[str, Any]:
    return {
        "rule": f"!({STARTED}) || {_same(path)}",
        "message": f"{path} cannot change once the pipeline has started ({why}); "
        "delete and re-create the job to change it",
        "reason": "FieldValueForbidden",
    }


def transition_rules() -> list[dict[str, Any]]:
    """The root object's ``x-kubernetes-validations`` transition rules."""
    rules = [_frozen(f"spec.{name}", why) for name, why in FROZEN_SECTIONS.items()]
    rules.append(
        {
            "rule": f"!({STARTED}) || "
            + " && ".join(_same(f"spec.requirements.{f}") for f in FROZEN_REQUIREMENTS),
            "message": "spec.requirements cannot change once the pipeline has started (the decisions "
            "were made against them), except budget; delete and re-create the job to change them",
            "reason": "FieldValueForbidden",
        }
    )
    rules.append(
        {
            "rule": "!has(oldSelf.status) || !has(oldSelf.status.training) || "
            "has(oldSelf.status.training.mergedUri) || self.spec.serving.engine == 'vllm' || "
            "self.spec.serving.engine == oldSelf.spec.serving.engine",
            "message": "spec.serving.engine cannot change to transformers once training has started "
            "without merged weights (transformers serves merged weights only; vllm serves the adapter)",
            "reason": "FieldValueForbidden",
        }
    )
    return rules
