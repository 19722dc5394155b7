"""probe_endpoint against the fake OpenAI server: success, server errors, nothing listening, time budget."""

from __future__ import annotations

import socket
import time

import pytest

from stratos.serving.probe import probe_endpoint
from support.fake_openai import FakeOpenAI


def test_probe_measures_latency_and_decode_speed() -> None:
    with FakeOpenAI(model="student", delay=0.02) as fake:
        result = probe_endpoint(
            fake.base_url, "student", prompts=["a b", "c d", "e f"], max_tokens=16, timeout=10
        )
        assert result.ok and result.error is None
        assert result.requests == 3 == len(fake.chat_requests)
        assert result.completion_tokens == fake.completion_tokens > 0
        assert result.latency_ms_p50 is not None and result.latency_ms_p50 >= 20
        assert result.tokens_per_second is not None and result.tokens_per_second > 0
        body = fake.chat_requests[0].body
        assert body["model"] == "student" and body["max_tokens"] == 16
        assert body["messages"] == [{"role": "user", "content": "a b"}]


def test_probe_reports_server_errors_without_the_key() -> None:
    with FakeOpenAI(model="m", always_fail_status=503) as fake:
        result = probe_endpoint(fake.base_url, "m", prompts=["x"], api_key="sk-secret-123456", timeout=10)
    assert not result.ok and result.latency_ms_p50 is None and result.tokens_per_second is None
    assert result.error is not None and "503" in result.error and "sk-secret" not in result.error


def test_probe_reports_nothing_listening() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = probe_endpoint(f"http://127.0.0.1:{port}/v1", "m", prompts=["x"], timeout=5)
    assert not result.ok and result.error is not None and "Connection" in result.error


def test_probe_stays_within_its_time_budget() -> None:
    with FakeOpenAI(model="m", delay=0.3) as fake:
        started = time.monotonic()
        result = probe_endpoint(fake.base_url, "m", prompts=["a", "b", "c", "d"], timeout=0.5)
        assert time.monotonic() - started < 2.0
    assert not result.ok and result.error is not None
    assert result.requests <= 1


def test_probe_needs_prompts() -> None:
    with pytest.raises(ValueError):
        probe_endpoint("http://127.0.0.1:1/v1", "m", prompts=[])
