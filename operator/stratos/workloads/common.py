"""Plumbing shared by every stage program (``python -m stratos.workloads.<stage>``).

A stage runs as a Kubernetes Job's container: it reads one JSON config (a mounted ConfigMap), does
its work, and reports one small JSON result as the container's termination message, which the
kubelet caps at 4096 bytes. So the result writer guarantees three things whatever happens: the file
holds valid JSON, it fits the limit (lists and long strings are cut, with ``"truncated": true``), and
it carries no secret (registered secrets are masked). A failure still writes a result,
``{"ok": false, "error": "<short message>", "kind": "<ErrorClass>"}``, and exits non-zero, so the
controller can tell a teacher with a bad key from a crashed pod.

Progress goes to stdout as log lines (``kubectl logs``); the result goes only to ``--result``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from stratos.llm.redact import install_redaction, redact
from stratos.logs import LOG_FORMATS, formatter

log = logging.getLogger("stratos.workloads")

RESULT_LIMIT = 4096
DEFAULT_RESULT_PATH = "/dev/termination-log"
ERROR_LIMIT = 400

# Successive shrinking passes: (max list items, max string length).
_SHRINK_LEVELS = ((50, 1000), (20, 300), (8, 120), (3, 60), (0, 40))


class WorkloadConfig(BaseModel):
    """Base of stage configs: camelCase JSON (as the controller writes it), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


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


class Terminated(BaseException):
    """SIGTERM arrived (pod deletion, preemption); raised so the result still gets written."""


C = TypeVar("C", bound=BaseModel)
Body = Callable[[C], "Mapping[str, Any] | Awaitable[Mapping[str, Any]]"]


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
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in err.errors(include_url=False)
        )
        raise ConfigError(f"invalid config: {problems}") from None


def setup_logging(level: str | int = "INFO", log_format: str | None = None) -> None:
    """Log lines to stdout (what ``kubectl logs`` shows), with secrets masked; ``log_format`` is
    ``text`` or ``json`` (default: ``STRATOS_LOG_FORMAT``, else text)."""
    root = logging.getLogger()
    chosen = formatter(log_format or os.environ.get("STRATOS_LOG_FORMAT") or "text")
    ours: list[logging.Handler] = [h for h in root.handlers if getattr(h, "_stratos", False)]
    if not ours:
        stdout = logging.StreamHandler(sys.stdout)
        stdout._stratos = True  # type: ignore[attr-defined]
        root.addHandler(stdout)
        ours = [stdout]
    for handler in ours:
        handler.setFormatter(chosen)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # Libraries' request chatter stays out of INFO logs.
    for name in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    install_redaction()


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


def run_stage(name: str, config_model: type[C], body: Body[C], argv: list[str] | None = None) -> int:
    """Parse ``--config``/``--result``, run ``body(config)`` (sync or async), write the result.

    Returns the process exit code: 0 on success, 1 on a reported failure, 143 on SIGTERM.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stratos.workloads.{name}")
    parser.add_argument("--config", required=True, help="path of the stage's JSON config")
    parser.add_argument(
        "--result", default=DEFAULT_RESULT_PATH, help="where the JSON result goes ('-' for stdout)"
    )
    parser.add_argument("--log-level", default=os.environ.get("STRATOS_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=os.environ.get("STRATOS_LOG_FORMAT") or "text"
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config = load_config(args.config, config_model)
        log.info("%s: starting", name)
        outcome = body(config)
        if inspect.isawaitable(outcome):
            outcome = asyncio.run(_awaited(outcome))
        payload = {"ok": True, **dict(outcome)}
        write_result(args.result, payload)
        log.info("%s: done", name)
        return 0
    except Terminated as err:
        write_result(args.result, {"ok": False, "error": str(err), "kind": "Terminated"})
        log.error("%s: %s", name, err)
        return 143
    except Exception as err:
        result = failure(err)
        write_result(args.result, result)
        log.error("%s failed: %s: %s", name, result["kind"], result["error"])
        log.debug("traceback", exc_info=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _awaited(outcome: Awaitable[Mapping[str, Any]]) -> Mapping[str, Any]:
    return await outcome
