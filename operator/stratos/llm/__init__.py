"""stratos.llm: the OpenAI-compatible client used for every teacher call."""

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
from stratos.llm.redact import install_redaction, redact, register_secret

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
