"""The stage contract's file format, shared by the controller and the stage programs.

A stage program reads one JSON config (a mounted ConfigMap) and reports one small JSON result as its
container's termination message, which the kubelet caps at 4096 bytes. So the result writer guarantees
three things whatever happens: the file holds valid JSON, it fits the limit (lists and long strings are
cut, with ``"truncated": true``), and it carries no secret (registered secrets are masked). A failure
still writes a result, ``{"ok": false, "error": "<short message>", "kind": "<ErrorClass>"}``, so the
controller can tell a teacher with a bad key from a crashed pod. ``StageError`` and ``ConfigError``
are the failures the parts of a stage program (synthesis, training) raise to be reported that way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from stratos.api.base import format_errors
from stratos.llm.redact import redact

log = logging.getLogger("stratos.contracts")

RESULT_LIMIT = 4096
DEFAULT_RESULT_PATH = "/dev/termination-log"
ERROR_LIMIT = 400

# Successive shrinking passes: (max list items, max string length).
_SHRINK_LEVELS = ((50, 1000), (20, 300), (8, 120), (3, 60), (0, 40))


class WorkloadConfig(BaseModel):
    """Base of stage configs: camelCase JSON (as the controller writes it), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The config as the controller writes it: camelCase JSON of the fields it set (the stage
        program's defaults apply to the rest)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class StageError(Exception):
    """A failure the stage reports as such; ``kind`` defaults to the class name."""

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self._kind = kind

    @property
    def kind(self) -> str:
        return self._kind or type(self).__name__


class ConfigError(StageError):
    """The config file is missing, not JSON, or does not match the stage's schema."""


C = TypeVar("C", bound=BaseModel)


def short_message(text: str, limit: int = ERROR_LIMIT) -> str:
    """One line, secrets masked, at most ``limit`` characters."""
    text = redact(" ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_kind(err: BaseException) -> str:
    kind = getattr(err, "kind", None)
    return kind if isinstance(kind, str) and kind else type(err).__name__


def failure(err: BaseException) -> dict[str, Any]:
    message = str(err) or type(err).__name__
    return {"ok": False, "error": short_message(message), "kind": error_kind(err)}


def _shrink(value: Any, max_items: int, max_chars: int) -> tuple[Any, bool]:
    """A copy of ``value`` with lists cut to ``max_items`` and strings to ``max_chars``; (copy, changed)."""
    if isinstance(value, str):
        if len(value) > max_chars:
            return value[: max(0, max_chars - 1)] + "…", True
        return value, False
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        changed = False
        for key, item in value.items():
            out[str(key)], c = _shrink(item, max_items, max_chars)
            changed |= c
        return out, changed
    if isinstance(value, list | tuple):
        items = list(value)
        changed = len(items) > max_items
        kept = []
        for item in items[:max_items]:
            v, c = _shrink(item, max_items, max_chars)
            kept.append(v)
            changed |= c
        return kept, changed
    return value, False


def _scrub(value: Any) -> Any:
    """Mask registered secrets in every string; make the value JSON-safe (non-finite floats -> None)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def compact_json(payload: Mapping[str, Any], limit: int = RESULT_LIMIT) -> str:
    """Serialise ``payload`` as compact JSON of at most ``limit`` UTF-8 bytes, always valid.

    Shrinks progressively (lists, then strings) and marks the result ``"truncated": true``; as a
    last resort keeps only the top-level scalars that fit.
    """
    clean = _scrub(payload)
    text = _dump(clean)
    if len(text.encode()) <= limit:
        return text
    for max_items, max_chars in _SHRINK_LEVELS:
        shrunk, _ = _shrink(clean, max_items, max_chars)
        shrunk["truncated"] = True
        text = _dump(shrunk)
        if len(text.encode()) <= limit:
            return text
    minimal: dict[str, Any] = {"truncated": True}
    for key in ("ok", "kind", "error", *clean.keys()):
        value = clean.get(key)
        if key in minimal or not (value is None or isinstance(value, bool | int | float | str)):
            continue
        if isinstance(value, str):
            value = value[:40]
        candidate = {**minimal, key: value}
        if len(_dump(candidate).encode()) <= limit:
            minimal = candidate
    return _dump(minimal)


def write_result(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> str:
    """Write the compact result; ``-`` means stdout. Returns the JSON text written."""
    text = compact_json(payload)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return text
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as err:  # still report it somewhere rather than lose it
        log.error("cannot write result to %s (%s); result follows on stdout", path, err.strerror)
        sys.stdout.write(text + "\n")
    return text


def load_config(path: str | os.PathLike[str], model: type[C]) -> C:
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"config {path} is not valid JSON: {err}") from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        problems = format_errors(err, separator="; ")
        raise ConfigError(f"invalid config: {problems}") from None


class StageResult(BaseModel):
    """Base of stage results: what a stage program reports, read back by the controller.

    Fields are camelCase on disk. Every field has a default, because the result writer may have cut a
    large result down to its top-level scalars (``truncated``) and an older worker image may not write
    a newer field; unknown fields are ignored for the same reason. ``dump`` is what a stage program
    returns (the runner adds ``ok``); ``read`` validates a result once, where the controller gets it.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    ok: bool = True
    error: str | None = None
    kind: str | None = None
    truncated: bool = False

    def dump(self) -> dict[str, Any]:
        """The fields the stage program set, camelCase, without the envelope (``ok``/``error``/``kind``)."""
        envelope = {"ok", "error", "kind", "truncated"}
        return self.model_dump(by_alias=True, exclude_unset=True, exclude=envelope)

    @classmethod
    def read(cls, result: Mapping[str, Any] | None) -> Self:
        """The result as this model; a missing result reads as empty (every field at its default)."""
        return cls.model_validate(dict(result or {}))


def cost_field() -> Any:
    """``costUsd`` (as in ``status.cost``); a result written by an older worker image said ``costUSD``."""
    choices = AliasChoices("costUsd", "costUSD", "cost_usd")
    return Field(0.0, validation_alias=choices, serialization_alias="costUsd")
