"""Stage-program plumbing: results always valid JSON under 4 KiB, failures reported, secrets masked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from stratos.contracts.stage_io import (
    RESULT_LIMIT,
    ConfigError,
    WorkloadConfig,
    compact_json,
    failure,
    load_config,
    write_result,
)
from stratos.llm import TeacherUnavailable, register_secret
from stratos.workloads.common import run_stage


class Cfg(WorkloadConfig):
    name: str
    size: int = 1


def test_compact_json_small_payload_unchanged():
    text = compact_json({"ok": True, "a": [1, 2], "b": "x"})
    assert text == '{"ok":true,"a":[1,2],"b":"x"}'


def test_compact_json_truncates_lists_and_strings_and_stays_valid():
    payload = {
        "ok": True,
        "items": [{"name": f"n{i}", "text": "y" * 500} for i in range(200)],
        "z": "q" * 9000,
    }
    text = compact_json(payload)
    assert len(text.encode()) <= RESULT_LIMIT
    data = json.loads(text)
    assert data["ok"] is True and data["truncated"] is True
    assert 0 < len(data["items"]) < 200


def test_compact_json_multibyte_and_pathological():
    text = compact_json({"ok": True, "tiles": "🀙" * 5000, "deep": [[["x" * 100] * 100] * 100]})
    assert len(text.encode()) <= RESULT_LIMIT
    assert json.loads(text)["ok"] is True
    many_keys = {f"k{i}": "v" * 30 for i in range(1000)}
    text = compact_json({"ok": False, "kind": "X", **many_keys})
    data = json.loads(text)
    assert len(text.encode()) <= RESULT_LIMIT and data["ok"] is False and data["kind"] == "X"


def test_compact_json_non_finite_floats_become_null():
    assert json.loads(compact_json({"a": float("nan"), "b": float("inf")})) == {"a": None, "b": None}


def test_secrets_are_masked_in_results():
    register_secret("sk-result-secret-99")
    text = compact_json({"ok": False, "error": "bad key sk-result-secret-99 given"})
    assert "sk-result-secret-99" not in text and "***" in text


def test_failure_shape_and_kind():
    assert failure(TeacherUnavailable("teacher t: authentication failed")) == {
        "ok": False,
        "error": "teacher t: authentication failed",
        "kind": "TeacherUnavailable",
    }
    f = failure(ValueError("x" * 2000 + "\n" + "y"))
    assert f["kind"] == "ValueError" and len(f["error"]) <= 400


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.json", Cfg)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad, Cfg)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"name": "a", "sizee": 2}')
    with pytest.raises(ConfigError, match="sizee"):
        load_config(wrong, Cfg)
    ok = tmp_path / "ok.json"
    ok.write_text('{"name": "a", "size": 3}')
    assert load_config(ok, Cfg).size == 3


def test_run_stage_success_sync_and_async(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"name": "a"}')
    res = tmp_path / "r.json"
    assert run_stage("x", Cfg, lambda c: {"name": c.name}, ["--config", str(cfg), "--result", str(res)]) == 0
    assert json.loads(res.read_text()) == {"ok": True, "name": "a"}

    async def body(c: Cfg):
        return {"size": c.size}

    assert run_stage("x", Cfg, body, ["--config", str(cfg), "--result", str(res)]) == 0
    assert json.loads(res.read_text()) == {"ok": True, "size": 1}


def test_run_stage_failure_writes_result_and_exits_non_zero(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"name": "a"}')
    res = tmp_path / "r.json"

    def body(c: Cfg):
        raise TeacherUnavailable("teacher a: authentication failed (HTTP 401)")

    assert run_stage("x", Cfg, body, ["--config", str(cfg), "--result", str(res)]) == 1
    assert json.loads(res.read_text()) == {
        "ok": False,
        "error": "teacher a: authentication failed (HTTP 401)",
        "kind": "TeacherUnavailable",
    }
    assert run_stage("x", Cfg, body, ["--config", str(tmp_path / "none.json"), "--result", str(res)]) == 1
    assert json.loads(res.read_text())["kind"] == "ConfigError"


def test_write_result_to_stdout(capsys):
    write_result("-", {"ok": True})
    assert capsys.readouterr().out.strip() == '{"ok":true}'


def test_sigterm_still_writes_a_result(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"name": "a"}')
    res = tmp_path / "r.json"
    script = textwrap.dedent(
        f"""
        import os, signal, time
        from stratos.contracts.stage_io import WorkloadConfig
        from stratos.workloads.common import run_stage

        class Cfg(WorkloadConfig):
            name: str

        def body(c):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            return {{}}

        raise SystemExit(run_stage("x", Cfg, body, ["--config", {str(cfg)!r}, "--result", {str(res)!r}]))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 143
    assert json.loads(res.read_text())["kind"] == "Terminated"


def test_stage_logs_are_one_json_object_per_line_with_secrets_masked(tmp_path):
    """STRATOS_LOG_FORMAT=json (the chart's logFormat, passed to every stage Job): each stdout line
    is a JSON object with kopf's field names, tracebacks included, the teacher's key masked."""
    cfg = tmp_path / "c.json"
    cfg.write_text('{"name": "a"}')
    program = textwrap.dedent(
        """
        import logging, sys
        from stratos.llm import register_secret
        from stratos.contracts.stage_io import WorkloadConfig
        from stratos.workloads.common import run_stage

        class Cfg(WorkloadConfig):
            name: str

        register_secret("sk-planted-0123456789")

        def body(c):
            logging.getLogger("stratos.workloads.x").info("calling with sk-planted-0123456789")
            raise RuntimeError("refused key sk-planted-0123456789")

        sys.exit(run_stage("x", Cfg, body, sys.argv[1:]))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "STRATOS_LOG_FORMAT": "json", "PYTHONPATH": ":".join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", program, "--config", str(cfg), "--result", "-", "--log-level", "DEBUG"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    logs = [json.loads(line) for line in lines if '"severity"' in line]
    assert [(e["severity"], e["message"]) for e in logs[:1]] == [("info", "x: starting")]
    assert {"timestamp", "severity", "logger", "message"} <= set(logs[0])
    assert any(e["message"] == "calling with ***" for e in logs), logs
    assert any("RuntimeError" in e.get("exc_info", "") for e in logs), logs
    assert "sk-planted" not in proc.stdout + proc.stderr
    assert all(line.startswith("{") for line in proc.stdout.splitlines()), proc.stdout


def test_an_unknown_log_format_is_refused():
    from stratos.logs import formatter

    with pytest.raises(ValueError, match="text, json"):
        formatter("yaml")
