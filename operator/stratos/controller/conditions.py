"""Status conditions, following the Kubernetes API conventions.

Conditions name states, not transitions (``ServerSelected``, not ``SelectingServer``). A condition's
``lastTransitionTime`` changes only when its ``status`` changes, so re-writing the same verdict on every
reconcile does not look like a flapping object in ``kubectl describe``.

Owns the condition types and the rule. Steps set conditions through ``Context.condition``, on the status
model (``DistillationJobStatus.set_condition``); the dict functions here serve what must work on a
status as stored, even one that does not read as the model: the ReconcileError and InvalidSpec outcomes
of the machine, the operator's own error path, and tests reading an outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, cast

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
#: The longest condition message metav1.Condition allows.
MAX_MESSAGE = 32768


def condition_status(status: str) -> ConditionStatus:
    """``status`` checked to be one of True, False and Unknown."""
    if status in (TRUE, FALSE, UNKNOWN):
        return cast(ConditionStatus, status)
    raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")


def now_rfc3339(now: datetime | None = None) -> str:
    """The RFC 3339 timestamp (second precision, ``Z``) that Kubernetes uses in conditions."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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
    """Return a new condition list with ``ctype`` set; other conditions are kept in their order.

    The transition time is carried over when the status did not change.
    """
    condition_status(status)
    result: list[dict[str, Any]] = []
    replaced = False
    for cond in conditions or ():
        if cond.get("type") != ctype:
            result.append(dict(cond))
            continue
        transition = cond.get("lastTransitionTime") if cond.get("status") == status else None
        result.append(_condition(ctype, status, reason, message, generation, transition or now_rfc3339(now)))
        replaced = True
    if not replaced:
        result.append(_condition(ctype, status, reason, message, generation, now_rfc3339(now)))
    return result


def remove_condition(conditions: Iterable[Mapping[str, Any]] | None, ctype: str) -> list[dict[str, Any]]:
    return [dict(c) for c in conditions or () if c.get("type") != ctype]


def _condition(
    ctype: str, status: str, reason: str, message: str, generation: int | None, transition: str
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond
