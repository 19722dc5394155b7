"""``transformers serve`` as a subprocess on localhost, for the embedded local runner and tests.

The real engine, not a stand-in: the same OpenAI-compatible server the ``transformers`` serving
engine runs in Kubernetes, started with the same arguments (``stratos.serving.commands``), offline
(``HF_HUB_OFFLINE=1``) on a local directory of merged weights. It needs ``transformers[serving]``
(FastAPI and Uvicorn) next to transformers.

transformers serve answers only for the model string it was started with, so the model directory is
linked as ``<tmp>/<model name>`` and the server runs in ``<tmp>``: clients ask for the clean name
instead of a path. Readiness is ``GET /health``, which answers only after the model has loaded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from stratos.serving.commands import HEALTH_PATH, MODEL_NAME_PATTERN, check_model_name, transformers_args

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


class LocalServerError(RuntimeError):
    """The server exited or did not become ready; the message ends with the tail of its log."""


def serve_available() -> bool:
    """Whether ``transformers serve`` can run here (transformers plus FastAPI and Uvicorn)."""
    return all(importlib.util.find_spec(m) is not None for m in ("transformers", "fastapi", "uvicorn"))


@dataclass
class LocalServer:
    """A running ``transformers serve``; ``stop()`` (or leaving the ``with`` block) ends it."""

    process: subprocess.Popen[bytes]
    base_url: str
    model_name: str
    workdir: Path
    _log: IO[bytes]

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Uvicorn shuts down gracefully), SIGKILL after ``timeout`` s; then remove the workdir."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_local_server(
    model_dir: str | os.PathLike[str],
    *,
    model_name: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    device: str = "cpu",
    ready_timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
) -> LocalServer:
    """Serve ``model_dir`` (a full model with tokenizer and chat template) and wait until it is ready.

    ``model_name`` defaults to the directory's name when that is a valid served name, else "student".
    ``port`` None picks a free one (retried once if another process takes it first). Raises
    ``LocalServerError`` with the server's log tail when it exits or is not ready in ``ready_timeout`` s.
    """
    source = Path(model_dir).resolve()
    if not (source / "config.json").is_file():
        raise LocalServerError(f"{source} holds no model (config.json missing); serve merged weights")
    name = check_model_name(
        model_name or (source.name if MODEL_NAME_PATTERN.match(source.name) else "student")
    )
    attempts = 1 if port is not None else 2
    for attempt in range(attempts):
        server = _launch(source, name, host, port or _free_port(host), device, env)
        try:
            _wait_ready(server, ready_timeout)
            return server
        except LocalServerError as err:
            server.stop()
            if attempt + 1 < attempts and "address already in use" in str(err).lower():
                continue
            raise
    raise AssertionError("unreachable")


def _launch(
    source: Path, name: str, host: str, port: int, device: str, env: Mapping[str, str] | None
) -> LocalServer:
    workdir = Path(tempfile.mkdtemp(prefix="stratos-serve-"))
    (workdir / name).symlink_to(source, target_is_directory=True)
    command = [
        sys.executable,
        "-m",
        "transformers.cli.transformers",
        "serve",
        *transformers_args(name, host=host, port=port, device=device),
    ]
    log = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env={**os.environ, **OFFLINE_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url_host = f"[{host}]" if ":" in host else host
    return LocalServer(process, f"http://{url_host}:{port}/v1", name, workdir, log)


def _wait_ready(server: LocalServer, timeout: float) -> None:
    health = server.base_url.removesuffix("/v1") + HEALTH_PATH
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise LocalServerError(f"transformers serve exited with {code}:\n{server.log_tail()}")
        if _healthy(health):
            return
        if time.monotonic() > deadline:
            raise LocalServerError(f"transformers serve not ready after {timeout:g} s:\n{server.log_tail()}")
        time.sleep(0.25)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
