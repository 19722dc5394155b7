"""Keep secrets out of logs and results.

Teacher API keys reach the pod through a secretKeyRef-backed environment variable. Our own code
never formats them into messages, but a library could (an exception echoing a header, a debug dump
of request options). So every secret the process learns is registered here, and a logging filter
masks it in any record before a handler sees it. ``redact`` applies the same masking to strings we
write elsewhere (stage results, error messages).
"""

from __future__ import annotations

import logging
import threading

MASK = "***"
# Values too short to be a real credential would mask innocent text ("EMPTY" is vLLM's placeholder).
_MIN_SECRET_LEN = 6
PLACEHOLDERS = frozenset({"EMPTY", "empty", "none", "None", "dummy"})

_lock = threading.Lock()
_secrets: set[str] = set()

# Loggers whose records may carry request details; filters on a logger apply only to records
# created on that very logger, so children existing at install time are covered one by one.
_NOISY_PREFIXES = ("stratos", "openai", "httpx", "httpx2", "httpcore", "aiohttp", "urllib3", "asyncio")


def register_secret(value: str | None) -> None:
    """Remember a secret so that ``redact`` and ``RedactingFilter`` mask it from now on."""
    if not value or value in PLACEHOLDERS or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        _secrets.add(value)


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    """Replace every registered secret (and ``extra`` ones) in ``text`` with ``***``."""
    with _lock:
        secrets = sorted(_secrets.union(s for s in extra if s), key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def truncate(text: str, limit: int = 80) -> str:
    """Shorten text for DEBUG logs: prompts are data, not log material."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's message and exception text; never drops records."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _lock:
            if not _secrets:
                return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's problem, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactingFilter()


def install_redaction() -> RedactingFilter:
    """Attach the filter to the root handlers and to the loggers of libraries that see requests.

    Idempotent. Call it again after adding handlers (the workloads call it after logging setup).
    """
    root = logging.getLogger()
    targets: list[logging.Filterer] = [root, *root.handlers]
    for name in list(logging.Logger.manager.loggerDict):
        if name.split(".")[0] in _NOISY_PREFIXES:
            targets.append(logging.getLogger(name))
    for prefix in _NOISY_PREFIXES:
        targets.append(logging.getLogger(prefix))
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
    return _FILTER
