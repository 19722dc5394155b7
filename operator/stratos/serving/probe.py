"""Measure a running OpenAI-compatible endpoint: request latency and decode speed.

Used by the operator once the serving Deployment is Ready (the endpoint's ``status``) and by the local
runner. A few chat completions are sent one after another, through the ``openai`` client like every
other model call in Stratos, each with a share of one overall time budget so the probe is bounded even
against a server that hangs. Latency is the wall time of a whole (non-streaming) completion;
tokens/s is the completion tokens the server reports divided by the time spent on the requests that
succeeded. The library's retries are off: a probe that needs retries has found a problem to report.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stratos.contracts.runs import ProbeOutcome
from stratos.llm.redact import redact, truncate

if TYPE_CHECKING:
    import openai

DEFAULT_PROMPTS: tuple[str, ...] = (
    "Say hello in one short sentence.",
    "What is 2 + 3? Answer with the number.",
)

Prompt = str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class ProbeResult:
    latency_ms_p50: float | None
    tokens_per_second: float | None
    ok: bool
    error: str | None = None
    requests: int = 0
    completion_tokens: int = 0


def probe_endpoint(
    base_url: str,
    model: str,
    *,
    prompts: Sequence[Prompt] = DEFAULT_PROMPTS,
    max_tokens: int = 32,
    api_key: str | None = None,
    timeout: float = 60.0,
) -> ProbeResult:
    """Send each prompt once (a string is one user message) and summarise; never raises for the server.

    ``ok`` is true when every request succeeded within ``timeout`` seconds in total. ``error`` names the
    first failure (secrets redacted). Requests left when the budget is spent count as a failure.
    """
    if not prompts:
        raise ValueError("probe_endpoint needs at least one prompt")
    # Here, not at module level: the operator imports this module, and openai takes about a second.
    import openai

    from stratos.llm.client import PLACEHOLDER_KEY

    deadline = time.monotonic() + timeout
    client = openai.OpenAI(base_url=base_url, api_key=api_key or PLACEHOLDER_KEY, max_retries=0)
    latencies: list[float] = []
    tokens = 0
    error: str | None = None
    try:
        for prompt in prompts:
            left = deadline - time.monotonic()
            if left <= 0:
                error = (
                    f"time budget of {timeout:g} s spent after {len(latencies)} of {len(prompts)} requests"
                )
                break
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            started = time.perf_counter()
            try:
                response = client.chat.completions.create(
                    model=model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=0.0,
                    timeout=left,
                )
            except openai.OpenAIError as err:
                error = _describe(err, api_key)
                break
            latencies.append(time.perf_counter() - started)
            if response.usage is not None:
                tokens += int(response.usage.completion_tokens or 0)
    finally:
        client.close()
    if not latencies:
        return ProbeResult(None, None, ok=False, error=error or "no request succeeded")
    elapsed = sum(latencies)
    return ProbeResult(
        latency_ms_p50=statistics.median(latencies) * 1000.0,
        tokens_per_second=tokens / elapsed if elapsed > 0 else None,
        ok=error is None,
        error=error,
        requests=len(latencies),
        completion_tokens=tokens,
    )


def _describe(err: openai.OpenAIError, api_key: str | None) -> str:
    status = getattr(err, "status_code", None)
    prefix = f"{type(err).__name__}" + (f" (HTTP {status})" if status is not None else "")
    detail, body = str(err), getattr(err, "body", None)
    if body and detail.endswith(f"Error code: {status}"):  # the body had no "message" the client shows
        detail = f"{detail} - {body}"
    return redact(f"{prefix}: {truncate(detail, 240)}", extra=(api_key,) if api_key else ())


def probe(url: str, model: str, api_key: str | None = None) -> ProbeOutcome:
    """Latency and tokens/s of a ready endpoint, from a few short chat completions."""
    result = probe_endpoint(url, model, api_key=api_key)
    return ProbeOutcome(
        ok=result.ok,
        latency_ms=result.latency_ms_p50,
        tokens_per_second=result.tokens_per_second,
        error=result.error or "",
    )
