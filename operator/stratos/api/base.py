"""Base model and rule plumbing shared by the spec and status models.

Every API model derives from `ApiModel`: Python attributes are snake_case, the wire format (YAML,
JSON, the Kubernetes object) is camelCase, and unknown fields are errors, because a misspelt field
that is silently ignored is the worst kind of configuration bug.

Cross-field rules are declared once, as `CelRule` objects next to the model they constrain. The same
object carries the CEL expression that the CRD generator writes into `x-kubernetes-validations`
(so the API server rejects bad objects) and the message that the model's pydantic validator raises
(so the operator and the local runner reject the same objects with the same words).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

#: CEL `reason` values the API server understands (they pick the error type it reports).
RuleReason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"]

#: The JSON-schema key the CRD generator copies verbatim into the OpenAPI schema.
CEL_KEY = "x-kubernetes-validations"


class RuleViolation(ValueError):
    """A cross-field rule failed; the message is the rule's own message, the same one the API server shows."""


@dataclass(frozen=True)
class CelRule:
    """One cross-field rule: CEL for the API server, a message for both sides.

    `field_path` (relative to the object the rule sits on, e.g. ".dataset") makes the API server
    report the error against the offending field instead of the enclosing object.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: RuleReason | None = None

    def to_schema(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry for this rule."""
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out

    def check(self, ok: bool, detail: str = "") -> None:
        """Raise `RuleViolation(message)` unless `ok`; called from the model's validator.

        `detail` (e.g. the duplicate names) is appended after a colon: the API server cannot say it,
        the Python side can.
        """
        if not ok:
            raise RuleViolation(f"{self.message}: {detail}" if detail else self.message)


def cel_schema(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` value that attaches `rules` to a model or field schema."""
    return {CEL_KEY: [r.to_schema() for r in rules]}


def cel_config(*rules: CelRule) -> ConfigDict:
    """`model_config` for an ApiModel subclass whose schema carries `rules` (merged with the base config)."""
    return ConfigDict(json_schema_extra=cel_schema(*rules))


class ApiModel(BaseModel):
    """Base of every API model: snake_case in Python, camelCase on the wire, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    def to_api(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, JSON types, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def section(model: type[ApiModel], description: str) -> Any:
    """Field for a sub-object whose fields all have defaults: omitted means "all defaults".

    The CRD gets the fully defaulted sub-object as its `default`, so the API server fills in (and
    stores) the effective settings, the way built-in objects show them in `kubectl get -o yaml`. It
    must be the expanded object, not `{}`: the API server checks a default against the CEL rules
    as it stands, without applying the nested defaults first.
    """
    return Field(
        default_factory=model,
        description=description,
        json_schema_extra={"default": _without_empties(model().to_api())},
    )


def _without_empties(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _without_empties(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    return value


def plain(value: Any) -> Any:
    """Deep-copy `value` into plain dicts and lists (kopf bodies are read-only mapping views)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(v) for v in value]
    return value


def _loc(parts: Iterable[int | str], root: str | None) -> str:
    out = root or ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def format_errors(
    err: ValidationError, root: str | None = None, *, separator: str = "\n", limit: int | None = None
) -> str:
    """``path: message`` per problem, with camelCase paths (``spec.task.dataset: ...``), joined by
    ``separator``; the first ``limit`` problems when given. The one formatter of validation errors: the
    CLI, the stage machine's InvalidSpec message and the stage programs' config errors all use it.

    `root` prefixes every path, e.g. "spec" when `err` came from validating the spec alone.
    """
    lines = []
    for e in err.errors(include_url=False)[:limit]:
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{_loc(e['loc'], root) or '(root)'}: {msg}")
    return separator.join(lines)
