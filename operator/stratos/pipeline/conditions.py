"""Status conditions, following the Kubernetes API conventions.

Conditions name states, not transitions (``ServerSelected``, not ``SelectingServer``). A condition's
``lastTransitionTime`` changes only when its ``status`` changes, so re-writing the same verdict on every
reconcile does not look like a flapping object in ``kubectl describe``.

Owns the condition types. Steps set conditions through ``Context.condition``, on the status model
(``DistillationJobStatus.set_condition``); the rule itself is ``stratos.api.status.next_condition``,
which the dict functions here apply too. They serve what must work on a status as stored, even one
that does not read as the model: the ReconcileError and InvalidSpec outcomes of the machine, the
operator's own error path, and tests reading an outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import ValidationError

from stratos.api.status import Condition, next_condition

# Condition types, in pipeline order. ``Ready`` rolls the whole pipeline up.
SERVER_SELECTED = "ServerSelected"
TEACHER_SELECTED = "TeacherSelected"
STUDENT_SELECTED = "StudentSelected"
DATA_READY = "DataReady"
TRAINED = "Trained"
EVALUATED = "Evaluated"
READY = "Ready"
FAILED = "Failed"
SUSPENDED = "Suspended"
# True while reconciling raises an unexpected exception (reason: its type; message: where and what).
RECONCILE_ERROR = "ReconcileError"

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"
ConditionStatus = Literal["True", "False", "Unknown"]


def condition_status(status: str) -> ConditionStatus:
    """``status`` checked to be one of True, False and Unknown."""
    if status in (TRUE, FALSE, UNKNOWN):
        return cast(ConditionStatus, status)
    raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")


def now_rfc3339(now: datetime | None = None) -> str:
    """The RFC 3339 timestamp (second precision, ``Z``) that Kubernetes uses in conditions."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(value: str) -> datetime:
    """A timestamp the operator wrote with ``now_rfc3339`` (or Kubernetes wrote), as an aware datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def get_condition(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> Mapping[str, Any] | None:
    for cond in conditions or ():
        if cond.get("type") == ctype:
            return cond
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> bool:
    cond = get_condition(conditions, ctype)
    return cond is not None and cond.get("status") == TRUE


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    ctype: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Return a new condition list with ``ctype`` set by the status model's rule (``next_condition``);
    other conditions are kept as stored, in their order."""
    stored = get_condition(conditions, ctype)
    try:
        old = None if stored is None else Condition.model_validate(stored)
    except ValidationError:
        old = None  # a condition stored malformed is replaced as if new
    new = next_condition(
        old,
        ctype,
        condition_status(status),
        reason,
        message,
        now=now_rfc3339(now),
        observed_generation=generation,
    )
    entry = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    result = [entry if c.get("type") == ctype else dict(c) for c in conditions or ()]
    return result if stored is not None else [*result, entry]


def remove_condition(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> list[dict[str, Any]]:
    return [dict(c) for c in conditions or () if c.get("type") != ctype]
