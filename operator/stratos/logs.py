"""Log formats of the stage programs: ``text`` (one readable line) or ``json`` (one JSON object per
line, for log pipelines), chosen with ``STRATOS_LOG_FORMAT``. The JSON fields follow kopf's
``--log-format=json`` (``timestamp``, ``severity``, ``message``) so the operator's and the stages'
lines parse alike."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")


def _severity(levelno: int) -> str:
    if levelno <= logging.DEBUG:
        return "debug"
    if levelno <= logging.INFO:
        return "info"
    if levelno <= logging.WARNING:
        return "warn"
    return "error" if levelno <= logging.ERROR else "fatal"


class JsonFormatter(logging.Formatter):
    """One JSON object per record. Uses the record's message and ``exc_text`` as filters left them
    (the secret-redacting filter rewrites both before any formatter runs)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": _severity(record.levelno),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``text`` or ``json``; anything else is an error (a typo must not go unseen)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
