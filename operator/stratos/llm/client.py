"""The one client every teacher call goes through: any OpenAI-compatible endpoint via ``openai``.

Why our own retry loop instead of the library's ``max_retries``: the behaviour must be bounded and
testable (attempt counts, delays, which errors are transient), and we need to tell the teacher
selector *why* a teacher failed. A teacher that cannot be reached at all (bad key, unknown model,
nothing listening) is unavailable and must be excluded, which is a different fact from a teacher
that answered wrongly. The library client is therefore built with ``max_retries=0``.

Concurrency is bounded per teacher (``max_concurrency`` from the spec) with a semaphore that is held
across a call's retries, so a rate-limited endpoint is not hammered by fresh requests while earlier
ones back off. Token usage is accumulated from the responses' ``usage`` block (estimated from text
length, and counted as such, when an endpoint omits it) and priced at ``cost_per_million_tokens``.

Logging: INFO says what happens (retries, failures) without prompts or keys; DEBUG shows truncated
prompts. The key is registered with ``stratos.llm.redact`` so it is masked even if a library logs it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from stratos.llm.redact import redact, register_secret, truncate

if TYPE_CHECKING:
    # Imported where a client is made or called: the operator imports this module (the stage contracts
    # name its types) but never calls a teacher, and ``openai`` took a third of its start-up imports.
    import openai

log = logging.getLogger(__name__)

#: The completion bound of a teacher request unless its connection sets another (``maxTokens``); also what
#: the synthesis budget reserves for a request sent without one.
DEFAULT_MAX_TOKENS = 2048
PLACEHOLDER_KEY = "EMPTY"  # what vLLM and most self-hosted servers accept when no key is configured
_MESSAGE_LIMIT = 200


class TeacherError(Exception):
    """A teacher call failed. ``str(err)`` is short and free of secrets; ``kind`` names the class."""

    @property
    def kind(self) -> str:
        return type(self).__name__


class TeacherUnavailable(TeacherError):
    """The endpoint fails outright: authentication, unknown model, nothing reachable. Exclude it."""


class TeacherRetriesExhausted(TeacherError):
    """Transient errors (429, 5xx, timeouts) persisted through every retry."""


class TeacherRequestRejected(TeacherError):
    """The endpoint refused this particular request (400, 413, 422): not retryable, not fatal."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: delay_n = min(max_delay, initial * 2**n) * (1 - jitter * U[0,1)).

    ``max_retries`` retries after the first attempt, so at most ``max_retries + 1`` requests per call.
    A server's Retry-After header (seconds) is honoured, capped at ``max_delay``.
    """

    max_retries: int = 5
    initial_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.5

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        if retry_after is not None and retry_after >= 0:
            return min(self.max_delay, retry_after)
        base = min(self.max_delay, self.initial_delay * (2**retry))
        return max(0.0, base * (1.0 - self.jitter * rng.random()))


@dataclass
class Usage:
    """Running totals over every successful call of one client."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_requests: int = 0  # responses without a usage block; tokens estimated as chars / 4
    retries: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatResult:
    """One answer. ``reasoning`` is the separate chain of thought some servers return
    (DeepSeek's ``reasoning_content``, vLLM's reasoning parsers), None when there is none."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    attempts: int
    usage_estimated: bool = False
    reasoning: str | None = None


def read_api_key(env_name: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The key from the environment variable *named* ``env_name``; the placeholder when none is set."""
    environ = os.environ if environ is None else environ
    if not env_name:
        return PLACEHOLDER_KEY
    value = environ.get(env_name, "").strip()
    if not value:
        log.warning("API key variable %s is empty or unset; using the placeholder key", env_name)
        return PLACEHOLDER_KEY
    register_secret(value)
    return value


def cost_usd(tokens: int, cost_per_million_tokens: float) -> float:
    return tokens / 1e6 * cost_per_million_tokens


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _endpoint_label(base_url: str) -> str:
    """host:port of the endpoint, never user-info or query strings (which may carry credentials)."""
    parts = urlsplit(base_url)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def _short(text: str) -> str:
    text = redact(" ".join(str(text).split()))
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _server_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return _short(str(inner["message"]))
        if isinstance(inner, str):
            return _short(inner)
    return ""


def _error_code(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            return str(inner.get("code") or inner.get("type") or "")
    return ""


def _reasoning_of(message: Any) -> str | None:
    """A separate reasoning field on the message, wherever the server put it."""
    for name in ("reasoning_content", "reasoning"):
        value = getattr(message, name, None)
        if value is None:
            extra = getattr(message, "model_extra", None) or {}
            value = extra.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _retry_after(err: openai.APIStatusError) -> float | None:
    value = err.response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


class TeacherClient:
    """Chat completions against one teacher endpoint, with bounded concurrency, retries and accounting."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        model: str,
        api_key: str | None = None,
        cost_per_million_tokens: float = 0.0,
        max_concurrency: int = 8,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.name = name
        self.base_url = base_url
        self.model = model
        self.cost_per_million_tokens = cost_per_million_tokens
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.usage = Usage()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._unavailable: TeacherUnavailable | None = None
        # Request parameters adapted to what the endpoint accepts (see _adapt).
        self._max_tokens_field = "max_tokens"
        self._dropped: set[str] = set()
        self._endpoint = _endpoint_label(base_url)
        key = api_key or PLACEHOLDER_KEY
        register_secret(key)
        import openai

        self._openai = openai.AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)

    @classmethod
    def from_env(cls, *, api_key_env: str | None, environ: Mapping[str, str] | None = None, **kwargs: Any):
        """Build with the key read from the environment variable named ``api_key_env``."""
        return cls(api_key=read_api_key(api_key_env, environ), **kwargs)

    def __repr__(self) -> str:  # no key, ever
        return f"TeacherClient(name={self.name!r}, endpoint={self._endpoint!r}, model={self.model!r})"

    @property
    def cost_usd(self) -> float:
        return cost_usd(self.usage.total_tokens, self.cost_per_million_tokens)

    async def aclose(self) -> None:
        await self._openai.close()

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def list_models(self) -> list[str]:
        """Model ids the endpoint serves (GET /models), with the same error classification."""

        async def call() -> list[str]:
            page = await self._openai.models.list()
            return [m.id for m in page.data]

        models, _ = await self._with_retries(call, what="list models")
        return models

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> ChatResult:
        """One non-streaming chat completion; raises a ``TeacherError`` subclass on failure."""
        if log.isEnabledFor(logging.DEBUG) and messages:
            log.debug("teacher %s: request %s", self.name, truncate(str(messages[-1].get("content", ""))))
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if max_tokens is not None:
            kwargs[self._max_tokens_field] = max_tokens
        if temperature is not None and "temperature" not in self._dropped:
            kwargs["temperature"] = temperature
        if seed is not None and "seed" not in self._dropped:
            kwargs["seed"] = seed

        async def call() -> Any:
            return await self._openai.chat.completions.create(**kwargs)

        while True:
            try:
                response, attempts = await self._with_retries(call, what="chat completion")
                break
            except TeacherRequestRejected as err:
                if not self._adapt(kwargs, str(err)):
                    raise
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice is not None else ""
        reasoning = _reasoning_of(choice.message) if choice is not None else None
        usage = response.usage
        estimated = usage is None
        if usage is not None:
            prompt_tokens, completion_tokens = (
                int(usage.prompt_tokens or 0),
                int(usage.completion_tokens or 0),
            )
        else:
            prompt_text = " ".join(str(m.get("content", "")) for m in messages)
            prompt_tokens, completion_tokens = _estimate_tokens(prompt_text), _estimate_tokens(text)
            self.usage.estimated_requests += 1
        self.usage.requests += 1
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        if log.isEnabledFor(logging.DEBUG):
            log.debug("teacher %s: answer %s", self.name, truncate(text))
        return ChatResult(
            text=text,
            reasoning=reasoning,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=choice.finish_reason if choice is not None else None,
            attempts=attempts,
            usage_estimated=estimated,
        )

    async def _with_retries(self, call: Callable[[], Awaitable[Any]], *, what: str) -> tuple[Any, int]:
        import openai

        attempts = 0
        all_connection_errors = True
        async with self._semaphore:
            while True:
                if self._unavailable is not None:  # fail fast: the endpoint already proved unusable
                    raise TeacherUnavailable(str(self._unavailable))
                attempts += 1
                try:
                    return await asyncio.wait_for(call(), timeout=self.timeout + 5.0), attempts
                except (TimeoutError, openai.APITimeoutError):
                    problem, retry_after = f"timed out after {self.timeout:g}s", None
                    all_connection_errors = False
                except openai.APIConnectionError as err:
                    problem, retry_after = f"cannot connect to {self._endpoint} ({_short(str(err))})", None
                except openai.APIStatusError as err:
                    all_connection_errors = False
                    status = err.status_code
                    if status in (401, 403):
                        raise self._mark_unavailable(
                            f"authentication failed at {self._endpoint} (HTTP {status})"
                        ) from None
                    if status == 404:
                        raise self._mark_unavailable(
                            f"model {self.model!r} or API path not found at {self._endpoint} (HTTP 404)"
                        ) from None
                    if status == 429 and _error_code(err) == "insufficient_quota":
                        raise self._mark_unavailable(
                            f"quota exhausted at {self._endpoint} (HTTP 429)"
                        ) from None
                    if status in (408, 409, 429) or status >= 500:
                        problem, retry_after = f"HTTP {status}", _retry_after(err)
                    else:
                        detail = _server_message(err)
                        raise TeacherRequestRejected(
                            f"{what} rejected (HTTP {status})" + (f": {detail}" if detail else "")
                        ) from None
                except openai.APIResponseValidationError:
                    raise TeacherRequestRejected(
                        f"{what}: malformed response from {self._endpoint}"
                    ) from None
                if attempts > self.retry.max_retries:
                    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
                    if all_connection_errors:
                        raise self._mark_unavailable(f"{problem}; gave up after {tries}")
                    raise TeacherRetriesExhausted(f"{what} failed after {tries}: {problem}")
                delay = self.retry.delay(attempts - 1, self._rng, retry_after)
                self.usage.retries += 1
                log.info(
                    "teacher %s: %s, retrying in %.2fs (retry %d of %d)",
                    self.name,
                    problem,
                    delay,
                    attempts,
                    self.retry.max_retries,
                )
                await self._sleep(delay)

    def _adapt(self, kwargs: dict[str, Any], message: str) -> bool:
        """Adjust a rejected request to the endpoint's dialect; True when it is worth sending again.

        OpenAI's reasoning models refuse ``max_tokens`` ("use 'max_completion_tokens' instead") and
        any non-default ``temperature``; some servers refuse ``seed``. The adaptation sticks for
        later calls, so each endpoint pays for the discovery once.
        """
        lowered = message.lower()
        if "max_completion_tokens" in lowered and "max_tokens" in kwargs:
            kwargs["max_completion_tokens"] = kwargs.pop("max_tokens")
            self._max_tokens_field = "max_completion_tokens"
            log.info("teacher %s: endpoint wants max_completion_tokens instead of max_tokens", self.name)
            return True
        for param in ("temperature", "seed"):
            if param in kwargs and param in lowered:
                kwargs.pop(param)
                self._dropped.add(param)
                log.info("teacher %s: endpoint rejects %s; sending requests without it", self.name, param)
                return True
        return False

    def _mark_unavailable(self, message: str) -> TeacherUnavailable:
        err = TeacherUnavailable(f"teacher {self.name}: {_short(message)}")
        self._unavailable = err
        log.warning("%s", err)
        return err
