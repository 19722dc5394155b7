"""The README's Quickstart commands, as written, from a fresh copy of the repository.

The repository's tracked files are copied to a new directory (what a clone holds), and the README's
first command (`make run`) and its `stratos validate` / `stratos plan` commands are read out of the
README and run there, from that directory, with default paths: the job's work directory is the
default, relative `.stratos/mahjong-local`, which the stage programs (run with the work directory as
their current directory) must still find. The run is the real pipeline (programmatic teacher, tiny
task-fitted students, every stage as a local process, `transformers serve`); its status and printed
summary are checked, and a second `make run` resumes without redoing a stage.

Three things differ from a user's machine, none in the code path:
- the copy's `.venv` reuses this interpreter's virtualenv (symlinks to its entries, plus the install
  stamp the Makefile expects), so `make run` does not reinstall, and does not touch that virtualenv;
  `PYTHONPATH` points at the copy's sources so the copy's code is what runs;
- the copy's example is reduced in size (task sizes, samples, epochs; the teacher on another port) and
  pinned to `minAccuracy: 0` with `strategy: injection` (the strategy the full example's `auto` picks),
  since so small a run cannot teach the student to meet the example's real threshold (the full size
  does: the README's Quickstart gives what it reached);
- one torch thread per process (`OMP_NUM_THREADS=1`): on two shared cores torch's default of a thread
  per core spins and slows tiny models by an order of magnitude.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SUMMARY = re.compile(
    r"Student (?P<student>\S+): (?P<acc>\d+\.\d)% on (?P<n>\d+) held-out samples; "
    r"teacher (?P<teacher>\S+): (?P<tacc>\d+\.\d)% on its probe sample\."
)


def quickstart_commands() -> list[list[str]]:
    """The command lines of each ``sh`` block of the README's Quickstart, comments stripped."""
    text = README.read_text()
    start = text.index("## Quickstart")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    commands = [[line.split("#", 1)[0].strip() for line in block.splitlines()] for block in blocks]
    return [[c for c in block if c] for block in commands]


def fresh_copy(target: Path) -> Path:
    """The repository's tracked files (their working-tree content) in ``target``, and a ``.venv`` that
    reuses this interpreter's virtualenv without modifying it."""
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("needs make and git")
    if sys.prefix == sys.base_prefix:
        pytest.skip("needs to run inside a virtualenv (the copy reuses it)")
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # a file deleted in the working tree is not copied
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target / rel)
    venv = target / ".venv"
    venv.mkdir()
    for entry in Path(sys.prefix).iterdir():
        if not entry.name.startswith(".installed-"):
            (venv / entry.name).symlink_to(entry)
    pyproject = target / "pyproject.toml"
    os.utime(pyproject, (pyproject.stat().st_mtime - 3600,) * 2)  # older than the stamp
    (venv / f".installed-{hashlib.sha256(pyproject.read_bytes()).hexdigest()[:16]}").touch()
    return target


def reduce_example(root: Path) -> None:
    path = root / "examples" / "mahjong-local.yaml"
    job = yaml.safe_load(path.read_text())
    spec = job["spec"]
    spec["task"].update(sampleSize=4, trainSize=24, testSize=4)
    spec["distillation"].update(targetSamples=32, epochs=1, strategy="injection")
    spec["requirements"]["minAccuracy"] = 0.0
    spec["teachers"][0]["endpoint"]["baseURL"] = "http://127.0.0.1:18732/v1"  # not the README's port
    path.write_text(yaml.safe_dump(job, sort_keys=False, allow_unicode=True))


def shell(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in its own process group, so that a timeout stops make, `stratos run`, its stage
    programs and its server too, not just the shell."""
    # One torch thread per process: on two shared cores, torch's default spins and slows tiny models ~50x.
    env = {**os.environ, "PYTHONPATH": str(cwd / "operator"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MAKEFLAGS", None)
    proc = subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{command!r} did not finish in {timeout:.0f} s:\n{(out + err)[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.timeout(1800)  # a few minutes on two idle cores; generous for a loaded machine
def test_readme_quickstart_runs_from_a_fresh_copy(tmp_path: Path) -> None:
    blocks = quickstart_commands()
    first = blocks[0][0]
    assert first == "make run"  # the README's first command, as a newcomer types it
    root = fresh_copy(tmp_path / "clone")
    reduce_example(root)

    done = shell(first, root, timeout=1200)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "PROGRAMMATIC Mahjong teacher" in out and "RANDOM-INITIALISED" in out  # labelled as such
    assert "fitted to the Mahjong task" in out

    workdir = root / ".stratos" / "mahjong-local"  # the default work directory, relative to the clone
    status = json.loads((workdir / "status.json").read_text())
    assert status["phase"] == "Serving", status.get("message")
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    for ctype in ("ServerSelected", "TeacherSelected", "StudentSelected", "DataReady", "Trained",
                  "Evaluated", "Ready"):  # fmt: skip
        assert conditions[ctype] == "True", (ctype, status)
    assert status["strategy"]["selected"] == "injection"
    assert status["data"]["samples"] == 32 and status["data"]["synthetic"] == 32 - 24
    assert status["endpoint"]["tokensPerSecond"] > 0

    # Every path a stage program was given is absolute (the stages run elsewhere than the caller).
    configs = sorted((workdir / "runs").glob("*/config.json"))
    assert len(configs) == 6  # teacher-eval, two probes, synthesize, train, evaluate
    for config in configs:
        for key, value in json.loads(config.read_text()).items():
            if isinstance(value, str) and ".stratos" in value:
                assert value.startswith(str(workdir.resolve())), (config, key, value)

    # The printed summary: the phase, and the student's held-out accuracy beside the teacher's.
    flat = " ".join(out.split())  # the console wraps long lines at its width
    assert "Phase: Serving" in flat
    match = SUMMARY.search(flat)
    assert match is not None, out[-3000:]
    evaluation = status["evaluation"]
    assert match["student"] == evaluation["student"] and int(match["n"]) == evaluation["samples"] == 4
    assert float(match["acc"]) == pytest.approx(100 * evaluation["accuracy"], abs=0.05)
    assert match["teacher"] == "programmatic"
    assert "Asked the endpoint" in out and "reply:" in out

    # Again: the run resumes from its status; no stage runs twice.
    results = {p: p.stat().st_mtime_ns for p in (workdir / "runs").glob("*/result.json")}
    again = shell(first, root, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "resuming from" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in (workdir / "runs").glob("*/result.json")} == results


def test_readme_validate_and_plan_from_a_fresh_copy(tmp_path: Path) -> None:
    commands = quickstart_commands()[-1]
    assert [c.split()[:2] for c in commands] == [[".venv/bin/stratos", "validate"],
                                                  [".venv/bin/stratos", "plan"]]  # fmt: skip
    root = fresh_copy(tmp_path / "clone")
    validate, plan = (shell(c, root, timeout=300) for c in commands)
    assert validate.returncode == 0 and validate.stdout.strip().endswith(": valid"), validate.stderr
    assert plan.returncode == 0, plan.stdout + plan.stderr
    # The joint rule before any probe: the pair table, the chosen pair marked, each student's probe node.
    assert "Server" in plan.stdout and "Joint (node, student) choice" in plan.stdout, plan.stdout
    assert re.search(r"^\*\s+tk-a100-a\s+llama-3-2-1b\s", plan.stdout, re.M), plan.stdout
    picture = root / "plan.svg"
    assert picture.exists() and ET.fromstring(picture.read_text()).tag.endswith("svg")
