"""A programmatic Mahjong teacher behind an OpenAI-compatible API, for offline runs.

This is NOT a language model. It reads the hand out of the prompt and uses the exact solver:

- given the question *and* the known answer (knowledge injection's reverse reasoning), it writes the
  meld decomposition behind that answer (``stratos.tasks.mahjong.explain``), the way a strong teacher
  would explain a solution it was shown;
- asked the question alone, it answers correctly for a fixed share of hands (``accuracy``, chosen by a
  hash of the hand, so the same hand always gets the same treatment) and otherwise names a plausible
  wrong tile, imitating a teacher outside its knowledge domain. The paper's teachers score 4-21%
  (Table 3); the default, ``DEFAULT_ACCURACY`` = 4%, is GPT-4o's score, the teacher of its headline
  result (a student distilled by knowledge injection reaching four times its teacher's accuracy).

It exists so that ``stratos run`` can show the whole pipeline without network or model weights, and
every output that comes from it says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stratos.tasks.mahjong import explain
from stratos.tasks.mahjong_solver import winning_tiles
from stratos.tasks.mahjong_tiles import canonical_answer, format_tiles, parse_tiles

MODEL = "programmatic-mahjong-teacher"
#: The share of hands solved when asked alone: GPT-4o's 4% on Mahjong in the paper's Table 3.
DEFAULT_ACCURACY = 0.04
_HAND = re.compile(r"Hand:\s*(.+)")
_KNOWN = re.compile(r"The correct answer is:\s*(.+)")


def _hand(text: str) -> list[int]:
    match = _HAND.search(text)
    return parse_tiles(match.group(1)) if match else []


def _share(hand: list[int]) -> float:
    digest = hashlib.sha256(bytes(sorted(hand))).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _wrong_tile(hand: list[int], truth: list[int]) -> list[int]:
    """A tile next to one in the hand that does not win: the kind of guess a model makes."""
    for tile in sorted(set(hand)):
        for candidate in (tile + 1, tile - 1, tile):
            if 0 <= candidate < 34 and candidate not in truth and hand.count(candidate) < 4:
                return [candidate]
    return [0]


def answer(prompt: str, *, accuracy: float) -> str:
    """The teacher's reply to one user prompt."""
    hand = _hand(prompt)
    if len(hand) != 13:
        return "I could not find a 13-tile hand in the question."
    known = _KNOWN.search(prompt)
    if known:
        try:
            return explain(hand, known.group(1).strip().splitlines()[0])
        except ValueError as err:
            return f"I cannot justify that answer: {err}."
    truth = winning_tiles(hand)
    if truth and _share(hand) < accuracy:
        return explain(hand, truth)
    guess = _wrong_tile(hand, truth)
    return (
        f"Looking at the hand {format_tiles(hand)}, the tiles seem to be waiting on a single tile. "
        f"The answer is {canonical_answer(guess)}"
    )


class ProgrammaticTeacher:
    """``with ProgrammaticTeacher(port=...) as t: t.base_url`` serves /v1/models and /v1/chat/completions."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, accuracy: float = DEFAULT_ACCURACY) -> None:
        self.accuracy = accuracy
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the runner's screen clean
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                    messages = request.get("messages") or []
                    prompt = next(
                        (str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
                    )
                except (ValueError, AttributeError):
                    self._send(400, {"error": {"message": "malformed request"}})
                    return
                text = answer(prompt, accuracy=teacher.accuracy)
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
                completion_tokens = len(text.split())
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{time.time_ns()}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": MODEL,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens,
                        },
                    },
                )

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="programmatic-teacher", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ProgrammaticTeacher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
