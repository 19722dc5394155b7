"""A local OpenAI-compatible teacher whose correctness the test controls.

Serves ``GET /v1/models`` and non-streaming ``POST /v1/chat/completions`` from a thread
(``http.server``), so both in-process async clients and stage programs run as subprocesses can reach
it. Given the task's samples it recognises which question a request asks (the question text appears
in the prompt) and answers correctly for an exact, deterministic subset of them (the first
``round(fraction * n)`` ids ordered by a salted hash, or an explicit id set) and wrongly otherwise,
in chain-of-thought prose ending in the answer. Usage counts whitespace-separated tokens, so tests
can recompute it with ``count_tokens``.

Failure modes for client tests: ``fail_first`` requests answered with ``fail_status`` (429 by
default, optional Retry-After), ``always_fail_status``, ``require_key`` (401 on a wrong or missing
bearer token) and ``delay`` per completion so concurrency is observable; every request is recorded
with its headers and body, and ``max_in_flight`` is the peak number of concurrent completions.

Dialects of real endpoints: ``unsupported_params`` answers 400 in OpenAI's words when a request
carries e.g. ``max_tokens`` or ``temperature`` (as its reasoning models do); ``reasoning_field``
returns the chain of thought in a separate message field (DeepSeek's ``reasoning_content``).
A reverse-reasoning prompt (the known answer stated beside the question, for knowledge
injection) is answered correctly unless ``reverse_correct=False``.
``reply(messages, body)`` may write the answer text itself (prompts the fake cannot recognise, such
as a request for a new question); returning None falls back to the behaviour above.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class SampleLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def answer(self) -> str: ...


def count_tokens(text: str) -> int:
    """The fake's token count: whitespace-separated words."""
    return len(text.split())


def prompt_tokens(messages: Iterable[dict[str, Any]]) -> int:
    return sum(count_tokens(str(m.get("content") or "")) for m in messages)


def choose_correct(ids: Sequence[str], fraction: float, salt: str = "") -> frozenset[str]:
    """Exactly round(fraction * len(ids)) ids, chosen by a salted hash (stable across runs)."""
    k = int(fraction * len(ids) + 0.5)
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{salt}/{i}".encode()).hexdigest())
    return frozenset(ranked[:k])


def default_wrong_answer(sample: SampleLike) -> str:
    """An answer a verifier rejects: a number off by one, otherwise a tile that is not the answer."""
    answer = sample.answer.strip()
    try:
        number = float(answer.replace(",", ""))
    except ValueError:
        return "🀀" if answer != "🀀" else "🀁"
    return str(int(number) + 1) if number.is_integer() else str(number + 1)


def default_render(sample: SampleLike | None, answer: str) -> str:
    """Chain-of-thought prose ending in the answer line most task extractors accept."""
    if sample is None:
        return f"I am not sure what is being asked.\nThe answer is {answer}"
    return (
        "Let me think step by step.\n"
        "First I group the tiles by suit and look for sequences and triplets that fit together.\n"
        "Then I check which single tile would complete four melds and a pair.\n"
        f"The answer is {answer}"
    )


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any
    status: int = 0
    sample_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None


class FakeOpenAI:
    """Use as a context manager: ``with FakeOpenAI(samples=..., correct_fraction=0.3) as fake:``."""

    def __init__(
        self,
        *,
        samples: Sequence[SampleLike] = (),
        model: str = "fake-teacher",
        correct_fraction: float = 1.0,
        correct_ids: Collection[str] | None = None,
        salt: str = "",
        require_key: str | None = None,
        fail_first: int = 0,
        fail_status: int = 429,
        retry_after: float | None = None,
        always_fail_status: int | None = None,
        delay: float = 0.0,
        hold_after: int | None = None,
        omit_usage: bool = False,
        unsupported_params: Collection[str] = (),
        reasoning_field: str | None = None,
        reverse_correct: bool = True,
        render: Callable[[SampleLike | None, str], str] = default_render,
        reply: Callable[[list[dict[str, Any]], dict[str, Any]], str | None] | None = None,
        wrong_answer: Callable[[SampleLike], str] = default_wrong_answer,
    ) -> None:
        self.samples = list(samples)
        self.model = model
        ids = [s.id for s in self.samples]
        self.correct_ids = (
            frozenset(correct_ids) if correct_ids is not None else choose_correct(ids, correct_fraction, salt)
        )
        self.require_key = require_key
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.always_fail_status = always_fail_status
        self.delay = delay
        #: Answer this many chat completions, then hold every further one until ``stop`` (a teacher that
        #: stops answering mid-run: the client is still waiting when a test kills it).
        self.hold_after = hold_after
        self._answered = 0
        self._released = threading.Event()
        self.omit_usage = omit_usage
        self.unsupported_params = frozenset(unsupported_params)
        self.reasoning_field = reasoning_field
        self.reverse_correct = reverse_correct
        self.render = render
        self.reply = reply
        self.wrong_answer = wrong_answer
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._failures_left = fail_first
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Longest questions first, so a question that contains another is matched as itself.
        self._by_question = sorted(self.samples, key=lambda s: len(s.question), reverse=True)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        handler = _make_handler(self)
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- observations ----------------------------------------------------------------------------
    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def completions(self) -> int:
        """Successful chat completions served."""
        return sum(1 for r in self.chat_requests if r.status == 200)

    def is_correct(self, sample_id: str) -> bool:
        return sample_id in self.correct_ids

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0
            self.prompt_tokens = self.completion_tokens = 0
            self._failures_left = self.fail_first

    # -- behaviour -------------------------------------------------------------------------------
    def find_sample(self, messages: Sequence[dict[str, Any]]) -> SampleLike | None:
        text = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") != "assistant")
        for sample in self._by_question:
            if sample.question and sample.question in text:
                return sample
        return None

    @staticmethod
    def is_reverse(sample: SampleLike, messages: Sequence[dict[str, Any]]) -> bool:
        """A reverse-reasoning prompt states the known answer besides the question."""
        user = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
        return bool(sample.answer) and sample.answer in user.replace(sample.question, "")

    def _answer(self, sample: SampleLike | None, messages: Sequence[dict[str, Any]]) -> str:
        if sample is None:
            return self.render(None, "🀀")
        correct = self.is_correct(sample.id) or (self.reverse_correct and self.is_reverse(sample, messages))
        return self.render(sample, sample.answer if correct else self.wrong_answer(sample))

    def _handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict, Any]:
        """Returns (status, extra headers, JSON payload). Runs on the server's handler threads."""
        record = RecordedRequest(method=method, path=path, headers=headers, body=body)
        with self._lock:
            self.requests.append(record)
        try:
            status, extra, payload = self._respond(record)
        except Exception as err:  # a bug in the fake should show up as a 500, not a hang
            status, extra, payload = 500, {}, _error(f"fake server error: {err}", "server_error")
        record.status = status
        record.finished = time.monotonic()
        return status, extra, payload

    def _message(self, text: str) -> dict[str, Any]:
        """The assistant message; with ``reasoning_field`` the chain of thought goes there (DeepSeek)."""
        if self.reasoning_field is None:
            return {"role": "assistant", "content": text}
        head, _, last = text.rpartition("\n")
        return {"role": "assistant", "content": last, self.reasoning_field: head}

    def _respond(self, record: RecordedRequest) -> tuple[int, dict, Any]:
        if self.require_key is not None:
            auth = record.headers.get("authorization", "")
            if auth != f"Bearer {self.require_key}":
                return 401, {}, _error("Incorrect API key provided.", "invalid_api_key")
        path = record.path.split("?")[0].rstrip("/")
        if record.method == "GET" and path == "/v1/models":
            return 200, {}, {"object": "list", "data": [_model(self.model)]}
        if record.method != "POST" or path != "/v1/chat/completions":
            return 404, {}, _error(f"no route {record.method} {path}", "not_found")
        body = record.body if isinstance(record.body, dict) else {}
        refused = sorted(self.unsupported_params & set(body))
        if refused:
            text = _UNSUPPORTED.get(refused[0], _UNSUPPORTED[""]).format(param=refused[0])
            return 400, {}, _error(text, "unsupported_parameter")
        if body.get("model") != self.model:
            return 404, {}, _error(f"The model `{body.get('model')}` does not exist.", "model_not_found")
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            held = self.hold_after is not None and self._answered >= self.hold_after
            self._answered += 1
            fail = self.always_fail_status
            if fail is None and self._failures_left > 0:
                self._failures_left -= 1
                fail = self.fail_status
        try:
            if held:
                self._released.wait(600)
            if self.delay:
                time.sleep(self.delay)
            if fail is not None:
                extra = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else {}
                kind = "rate_limit_exceeded" if fail == 429 else "server_error"
                return fail, extra, _error(f"simulated HTTP {fail}", kind)
            messages = list(body.get("messages") or [])
            sample = self.find_sample(messages)
            record.sample_id = sample.id if sample is not None else None
            custom = self.reply(messages, body) if self.reply is not None else None
            text = custom if custom is not None else self._answer(sample, messages)
            p_tokens, c_tokens = prompt_tokens(messages), count_tokens(text)
            with self._lock:
                self.prompt_tokens += p_tokens
                self.completion_tokens += c_tokens
            payload: dict[str, Any] = {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": self._message(text),
                        "finish_reason": "stop",
                    }
                ],
            }
            if not self.omit_usage:
                payload["usage"] = {
                    "prompt_tokens": p_tokens,
                    "completion_tokens": c_tokens,
                    "total_tokens": p_tokens + c_tokens,
                }
            return 200, {}, payload
        finally:
            with self._lock:
                self.in_flight -= 1


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (a cancelled request, an exiting subprocess) are not test failures."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


_UNSUPPORTED = {  # OpenAI's own wording for reasoning models
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead.",
    "temperature": "Unsupported value: 'temperature' does not support 0.0 with this model. "
    "Only the default (1) value is supported.",
    "": "Unsupported parameter: '{param}' is not supported with this model.",
}


def _model(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": 0, "owned_by": "stratos-tests"}


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            status, extra, payload = fake._handle(
                method, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
