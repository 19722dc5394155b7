"""stratos.llm: the OpenAI-compatible client used for every teacher call.

The client's names are loaded on first use: importing ``stratos.llm.redact`` (the operator does) must
not import ``openai``, which takes about a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stratos.llm.redact import install_redaction, redact, register_secret

_REDACT_NAMES = frozenset({"install_redaction", "redact", "register_secret"})

if TYPE_CHECKING:
    from stratos.llm.client import (
        PLACEHOLDER_KEY,
        ChatResult,
        RetryPolicy,
        TeacherClient,
        TeacherError,
        TeacherRequestRejected,
        TeacherRetriesExhausted,
        TeacherUnavailable,
        Usage,
        cost_usd,
        read_api_key,
    )


def __getattr__(name: str) -> Any:
    if name in __all__ and name not in _REDACT_NAMES:
        from stratos.llm import client

        return getattr(client, name)
    raise AttributeError(f"module 'stratos.llm' has no attribute {name!r}")


__all__ = [
    "PLACEHOLDER_KEY",
    "ChatResult",
    "RetryPolicy",
    "TeacherClient",
    "TeacherError",
    "TeacherRequestRejected",
    "TeacherRetriesExhausted",
    "TeacherUnavailable",
    "Usage",
    "cost_usd",
    "install_redaction",
    "read_api_key",
    "redact",
    "register_secret",
]
