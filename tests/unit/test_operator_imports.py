"""What the operator process imports, and when (checked in a fresh interpreter through ``sys.modules``).

A restarted operator first asks for the node list and loads the decision code while the API server
answers (``operator.configure``): importing the operator module (what ``kopf run -m`` does before any
handler) must not load the stage machine, and nothing the operator runs may load the stage programs'
libraries (torch, transformers, the OpenAI client), which only the worker image carries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from stratos.controller.nodewatch import startup_wait

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
HEAVY = {"torch", "transformers", "openai", "datasets", "trl", "peft"}


def run(code: str) -> tuple[list[str], set[str]]:
    """What ``code`` prints as JSON (``say``) and the modules loaded after it, in a fresh interpreter."""
    script = (
        f"import json, sys\nsaid = []\nsay = said.append\n{code}\n"
        "print(json.dumps([said, sorted(sys.modules)]))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OPERATOR), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    said, modules = json.loads(out.stdout.strip().splitlines()[-1])
    return said, set(modules)


def test_the_operator_module_defers_the_decision_code_and_never_loads_the_stage_programs_libraries() -> None:
    said, at_import = run("import stratos.controller.operator as op\nsay(list(op.DECISION_MODULES))")
    decision = set(said[0])
    assert {"stratos.pipeline.machine", "stratos.controller.executor"} <= decision
    assert "stratos.controller.nodewatch" in at_import and "kopf" in at_import
    assert not at_import & decision
    assert "numpy" not in at_import  # the decision code's; loaded with it
    _, running = run(
        "import importlib, stratos.controller.operator as op\n"
        "for m in op.DECISION_MODULES: importlib.import_module(m)"
    )
    assert decision <= running
    assert not {m.split(".")[0] for m in running} & HEAVY


def test_readers_wait_for_the_first_node_listing_only_in_the_first_seconds_after_the_cache_started() -> None:
    assert startup_wait(None, 100.0, 5.0) == 0.0  # never started: nothing to wait for
    assert startup_wait(100.0, 100.0, 5.0) == 5.0
    assert startup_wait(100.0, 101.5, 5.0) == 3.5
    assert startup_wait(100.0, 135.0, 5.0) == 0.0  # a listing that keeps failing holds nobody


def test_a_job_whose_children_cannot_be_listed_gets_a_reconcile_error_naming_the_refusal(monkeypatch) -> None:
    """A refused listing of stage Jobs (RBAC narrower than the namespaces watched) is written on the job
    as ReconcileError with the API server's words, not only logged while the job waits forever."""
    import logging
    from types import SimpleNamespace

    from stratos.controller import announce
    from stratos.controller import operator as op

    written: list[dict] = []
    monkeypatch.setattr(op, "_write_status", lambda api, body, changes: written.append(dict(changes)) or True)
    monkeypatch.setattr(op, "CHILDREN_WAIT_SECONDS", 0.0)
    monkeypatch.setattr(announce, "post", lambda api, body, items: [])
    refusal = "jobs in all namespaces: 403 Forbidden: jobs.batch is forbidden"
    children = SimpleNamespace(synced=False, wait_synced=lambda timeout: False, problem=lambda: refusal)
    memo = SimpleNamespace(children=children, nodes=SimpleNamespace(synced=True), api=None)
    body = {
        "metadata": {"name": "j", "namespace": "team-a", "uid": "u-refused", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {},
        "status": {},
    }  # fmt: skip
    op.tick(body=body, memo=memo, logger=logging.getLogger("test"))
    assert written, "nothing was written on the job"
    error = next(c for c in written[0]["conditions"] if c["type"] == "ReconcileError")
    assert error["status"] == "True" and error["reason"] == "ChildrenUnlisted"
    assert refusal in error["message"] and "STRATOS_WATCHED_NAMESPACES" in error["message"]
    op._backoff.pop("u-refused", None)


def test_the_per_tick_success_line_is_dropped_and_other_kopf_lines_are_kept() -> None:
    import logging

    from stratos.controller.operator import QUIET_TICKS

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, msg, None, None)

    assert not QUIET_TICKS.filter(record(logging.INFO, "Timer 'tick' succeeded."))
    assert QUIET_TICKS.filter(record(logging.ERROR, "Timer 'tick' failed with an exception. Will retry."))
    assert QUIET_TICKS.filter(record(logging.INFO, "Handler 'other' succeeded."))
    assert QUIET_TICKS.filter(record(logging.WARNING, "Timer 'tick' succeeded."))
