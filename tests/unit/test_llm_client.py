"""TeacherClient against the fake OpenAI server: retries, failures, concurrency, accounting, secrecy."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from dataclasses import dataclass

import pytest

from stratos.llm import (
    PLACEHOLDER_KEY,
    RetryPolicy,
    TeacherClient,
    TeacherRequestRejected,
    TeacherRetriesExhausted,
    TeacherUnavailable,
    install_redaction,
    read_api_key,
    redact,
)
from support.fake_openai import FakeOpenAI, count_tokens, prompt_tokens

SECRET = "sk-test-7f3a9c1e5b2d4f6a8c0e"


@dataclass(frozen=True)
class S:
    id: str
    question: str
    answer: str


SAMPLES = [S(f"q{i}", f"What is {i} plus {i}?", str(2 * i)) for i in range(10)]


def ask(i: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a careful calculator."},
        {"role": "user", "content": f"Question: {SAMPLES[i].question} End with 'The answer is N'."},
    ]


class Sleeps:
    """Records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def client(fake: FakeOpenAI, **kw) -> TeacherClient:
    kw.setdefault("retry", RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05))
    kw.setdefault("timeout", 10.0)
    kw.setdefault("api_key", SECRET)
    return TeacherClient(name="t", base_url=fake.base_url, model=fake.model, **kw)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_retried_then_success(status):
    sleeps = Sleeps()
    with FakeOpenAI(samples=SAMPLES, fail_first=2, fail_status=status) as fake:

        async def go():
            async with client(fake, sleep=sleeps) as c:
                return await c.chat(ask(1)), c.usage

        result, usage = run(go())
        assert result.attempts == 3
        assert result.text.endswith("The answer is 2")
        assert usage.retries == 2 and usage.requests == 1
        assert [r.status for r in fake.chat_requests] == [status, status, 200]
        assert len(sleeps.delays) == 2
        assert all(0 <= d <= 0.05 for d in sleeps.delays)


def test_retry_after_header_is_honoured():
    sleeps = Sleeps()
    with FakeOpenAI(samples=SAMPLES, fail_first=1, retry_after=0.04) as fake:

        async def go():
            async with client(fake, sleep=sleeps) as c:
                return await c.chat(ask(0))

        assert run(go()).attempts == 2
    assert sleeps.delays == [0.04]


def test_gives_up_after_max_retries():
    sleeps = Sleeps()
    with FakeOpenAI(samples=SAMPLES, always_fail_status=500) as fake:

        async def go():
            async with client(fake, sleep=sleeps, retry=RetryPolicy(max_retries=2, initial_delay=0.01)) as c:
                await c.chat(ask(0))

        with pytest.raises(TeacherRetriesExhausted, match=r"failed after 3 attempts: HTTP 500"):
            run(go())
        assert len(fake.chat_requests) == 3
    assert len(sleeps.delays) == 2


def test_backoff_is_exponential_jittered_and_capped():
    policy = RetryPolicy(max_retries=10, initial_delay=1.0, max_delay=8.0, jitter=0.5)
    rng = random.Random(0)
    for retry, base in enumerate([1, 2, 4, 8, 8, 8]):
        d = policy.delay(retry, rng)
        assert base * 0.5 <= d <= base
    assert RetryPolicy(jitter=0.0, initial_delay=0.5).delay(2, rng) == 2.0
    assert RetryPolicy(max_delay=3.0).delay(0, rng, retry_after=100.0) == 3.0


def test_401_is_unavailable_without_retry_and_fails_fast_afterwards():
    with FakeOpenAI(samples=SAMPLES, require_key="the-right-key-123") as fake:

        async def go():
            async with client(fake, sleep=Sleeps()) as c:
                with pytest.raises(TeacherUnavailable) as first:
                    await c.chat(ask(0))
                with pytest.raises(TeacherUnavailable):
                    await c.chat(ask(1))
                return str(first.value)

        message = run(go())
        assert "authentication failed" in message and "HTTP 401" in message
        assert SECRET not in message
        assert len(fake.chat_requests) == 1  # no retry, and the second call never left the process


def test_unknown_model_is_unavailable():
    with FakeOpenAI(samples=SAMPLES) as fake:

        async def go():
            async with TeacherClient(name="t", base_url=fake.base_url, model="nope", api_key=SECRET) as c:
                await c.chat(ask(0))

        with pytest.raises(TeacherUnavailable, match=r"model 'nope'.*HTTP 404"):
            run(go())


def test_connection_refused_on_every_try_is_unavailable():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sleeps = Sleeps()

    async def go():
        async with TeacherClient(
            name="t",
            base_url=f"http://127.0.0.1:{port}/v1",
            model="m",
            api_key=SECRET,
            retry=RetryPolicy(max_retries=2, initial_delay=0.01),
            sleep=sleeps,
        ) as c:
            await c.chat(ask(0))

    with pytest.raises(TeacherUnavailable, match=r"cannot connect to 127\.0\.0\.1.*gave up after 3 attempts"):
        run(go())
    assert len(sleeps.delays) == 2


def test_per_request_timeout_is_transient_and_bounded():
    with FakeOpenAI(samples=SAMPLES, delay=1.0) as fake:

        async def go():
            async with client(fake, timeout=0.2, retry=RetryPolicy(max_retries=1, initial_delay=0.01)) as c:
                await c.chat(ask(0))

        with pytest.raises(TeacherRetriesExhausted, match=r"timed out after 0\.2s"):
            run(go())


def test_bad_request_is_rejected_not_retried():
    with FakeOpenAI(samples=SAMPLES) as fake:
        # the fake answers unknown routes with 404; force a 400 by posting an invalid body shape
        fake.always_fail_status = 400

        async def go():
            async with client(fake) as c:
                await c.chat(ask(0))

        with pytest.raises(TeacherRequestRejected, match="HTTP 400"):
            run(go())
        assert len(fake.chat_requests) == 1


def test_concurrency_bound_is_respected():
    with FakeOpenAI(samples=SAMPLES, delay=0.15) as fake:

        async def go():
            async with client(fake, max_concurrency=3) as c:
                return await asyncio.gather(*(c.chat(ask(i)) for i in range(10)))

        results = run(go())
        assert len(results) == 10
        assert fake.max_in_flight == 3


def test_usage_and_cost_accounting():
    with FakeOpenAI(samples=SAMPLES, correct_ids={"q0", "q2"}) as fake:

        async def go():
            async with client(fake, cost_per_million_tokens=2.5) as c:
                results = [await c.chat(ask(i)) for i in range(4)]
                return results, c.usage, c.cost_usd

        results, usage, cost = run(go())
    expected_prompt = sum(prompt_tokens(ask(i)) for i in range(4))
    expected_completion = sum(count_tokens(r.text) for r in results)
    assert usage.prompt_tokens == expected_prompt == fake.prompt_tokens
    assert usage.completion_tokens == expected_completion == fake.completion_tokens
    assert usage.requests == 4 and usage.estimated_requests == 0
    assert cost == pytest.approx((expected_prompt + expected_completion) / 1e6 * 2.5)
    # the fake answers exactly the chosen ids correctly
    assert [r.text.rsplit(" ", 1)[-1] for r in results] == ["0", "3", "4", "7"]


def test_missing_usage_is_estimated_and_counted():
    with FakeOpenAI(samples=SAMPLES, omit_usage=True) as fake:

        async def go():
            async with client(fake) as c:
                r = await c.chat(ask(0))
                return r, c.usage

        r, usage = run(go())
    assert r.usage_estimated and usage.estimated_requests == 1
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_key_from_named_env_var_and_placeholder():
    assert read_api_key("TEACHER_KEY", {"TEACHER_KEY": SECRET}) == SECRET
    assert read_api_key("TEACHER_KEY", {}) == PLACEHOLDER_KEY
    assert read_api_key(None, {"TEACHER_KEY": SECRET}) == PLACEHOLDER_KEY
    with FakeOpenAI(samples=SAMPLES) as fake:

        async def go(c: TeacherClient):
            async with c:
                await c.chat(ask(0))
                assert await c.list_models() == [fake.model]

        env = {"MY_TEACHER_KEY": SECRET}
        run(
            go(
                TeacherClient.from_env(
                    api_key_env="MY_TEACHER_KEY",
                    environ=env,
                    name="t",
                    base_url=fake.base_url,
                    model=fake.model,
                )
            )
        )
        run(go(TeacherClient.from_env(api_key_env=None, name="t", base_url=fake.base_url, model=fake.model)))
        auth = [r.headers.get("authorization") for r in fake.chat_requests]
    assert auth == [f"Bearer {SECRET}", f"Bearer {PLACEHOLDER_KEY}"]
    assert SECRET not in repr(TeacherClient(name="t", base_url="http://x/v1", model="m", api_key=SECRET))


def test_key_never_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    install_redaction()
    with FakeOpenAI(samples=SAMPLES, fail_first=1, require_key=SECRET) as fake:

        async def go():
            async with client(fake, sleep=Sleeps()) as c:
                await c.chat(ask(0))
            async with TeacherClient(
                name="bad", base_url=fake.base_url, model=fake.model, api_key=SECRET + "-wrong"
            ) as c:
                with pytest.raises(TeacherUnavailable):
                    await c.chat(ask(1))

        run(go())
    # even if some code logs it by accident, the filter masks it
    logging.getLogger("stratos.llm.client").debug("header was Bearer %s", SECRET)
    assert "retrying" in caplog.text  # INFO retry line present
    assert "authentication failed" in caplog.text
    assert SECRET not in caplog.text
    assert "***" in caplog.text
    # the prompt only ever appears truncated, at DEBUG
    for record in caplog.records:
        if record.levelno >= logging.INFO:
            assert "careful calculator" not in record.getMessage()


def test_redact_masks_registered_and_extra_secrets():
    assert redact(f"x {SECRET} y") == "x *** y"
    assert redact("token abcdefgh!", extra=("abcdefgh",)) == "token ***!"
    assert redact("EMPTY stays") == "EMPTY stays"


def test_adapts_to_reasoning_model_parameters():
    with FakeOpenAI(samples=SAMPLES, unsupported_params={"max_tokens", "temperature"}) as fake:

        async def go():
            async with client(fake) as c:
                first = await c.chat(ask(0), max_tokens=64, temperature=0.0)
                second = await c.chat(ask(1), max_tokens=64, temperature=0.0)
                return first, second

        first, second = run(go())
        assert first.text.endswith("The answer is 0") and second.text.endswith("The answer is 2")
        statuses = [r.status for r in fake.chat_requests]
        assert statuses == [400, 400, 200, 200]  # discovered once, then sent in the endpoint's dialect
        last = fake.chat_requests[-1].body
        assert last["max_completion_tokens"] == 64 and "max_tokens" not in last and "temperature" not in last


def test_separate_reasoning_field_is_returned():
    with FakeOpenAI(samples=SAMPLES, reasoning_field="reasoning_content") as fake:

        async def go():
            async with client(fake) as c:
                return await c.chat(ask(3))

        result = run(go())
    assert result.text == "The answer is 6"
    assert result.reasoning is not None and result.reasoning.startswith("Let me think step by step.")


def test_fake_answers_reverse_prompts_correctly():
    with FakeOpenAI(samples=SAMPLES, correct_ids=set()) as fake:
        reverse = [{"role": "user", "content": f"{SAMPLES[4].question}\nThe correct answer is: 8\nExplain."}]

        async def go():
            async with client(fake) as c:
                return (await c.chat(ask(4))).text, (await c.chat(reverse)).text

        forward, backward = run(go())
    assert forward.endswith("The answer is 9") and backward.endswith("The answer is 8")
