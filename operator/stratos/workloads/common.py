"""The runner every stage program (``python -m stratos.workloads.<stage>``) is started by.

``run_stage`` parses ``--config``/``--result``, sets up logging to stdout (what ``kubectl logs``
shows, secrets masked), turns SIGTERM into ``Terminated`` so a result is still written, runs the
stage's body and writes its result or its failure through the stage contract's file format
(``stratos.contracts.stage_io``). Progress goes to stdout as log lines; the result only to ``--result``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from stratos.contracts.stage_io import DEFAULT_RESULT_PATH, failure, load_config, write_result
from stratos.llm.redact import install_redaction
from stratos.logs import LOG_FORMATS, formatter

log = logging.getLogger("stratos.workloads")


class Terminated(BaseException):
    """SIGTERM arrived (pod deletion, preemption); raised so the result still gets written."""


C = TypeVar("C", bound=BaseModel)
Body = Callable[[C], "Mapping[str, Any] | Awaitable[Mapping[str, Any]]"]


def setup_logging(level: str | int = "INFO", log_format: str | None = None) -> None:
    """Log lines to stdout (what ``kubectl logs`` shows), with secrets masked; ``log_format`` is
    ``text`` or ``json`` (default: ``STRATOS_LOG_FORMAT``, else text)."""
    root = logging.getLogger()
    chosen = formatter(log_format or os.environ.get("STRATOS_LOG_FORMAT") or "text")
    ours: list[logging.Handler] = [h for h in root.handlers if getattr(h, "_stratos", False)]
    if not ours:
        stdout = logging.StreamHandler(sys.stdout)
        stdout._stratos = True  # type: ignore[attr-defined]
        root.addHandler(stdout)
        ours = [stdout]
    for handler in ours:
        handler.setFormatter(chosen)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # Libraries' request chatter stays out of INFO logs.
    for name in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    install_redaction()


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


def run_stage(
    name: str,
    config_model: type[C],
    body: Body[C],
    argv: list[str] | None = None,
    *,
    on_failure: Callable[[], Mapping[str, Any]] | None = None,
) -> int:
    """Parse ``--config``/``--result``, run ``body(config)`` (sync or async), write the result.

    ``on_failure`` gives fields a failure result carries besides ``ok``/``error``/``kind``: what the
    stage had done (spent) before it failed or was terminated.

    Returns the process exit code: 0 on success, 1 on a reported failure, 143 on SIGTERM.
    """

    def partial() -> dict[str, Any]:
        return dict(on_failure()) if on_failure is not None else {}

    parser = argparse.ArgumentParser(prog=f"python -m stratos.workloads.{name}")
    parser.add_argument("--config", required=True, help="path of the stage's JSON config")
    parser.add_argument(
        "--result", default=DEFAULT_RESULT_PATH, help="where the JSON result goes ('-' for stdout)"
    )
    parser.add_argument("--log-level", default=os.environ.get("STRATOS_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default=os.environ.get("STRATOS_LOG_FORMAT") or "text"
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config = load_config(args.config, config_model)
        log.info("%s: starting", name)
        outcome = body(config)
        if inspect.isawaitable(outcome):
            outcome = asyncio.run(_awaited(outcome))
        payload = {"ok": True, **dict(outcome)}
        write_result(args.result, payload)
        log.info("%s: done", name)
        return 0
    except Terminated as err:
        write_result(args.result, {**partial(), "ok": False, "error": str(err), "kind": "Terminated"})
        log.error("%s: %s", name, err)
        return 143
    except Exception as err:
        result = failure(err)
        write_result(args.result, {**partial(), **result})
        log.error("%s failed: %s: %s", name, result["kind"], result["error"])
        log.debug("traceback", exc_info=True)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _awaited(outcome: Awaitable[Mapping[str, Any]]) -> Mapping[str, Any]:
    return await outcome
