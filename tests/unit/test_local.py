"""The embedded runner's pieces: the local executor and the programmatic teacher."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from openai import OpenAI

from stratos.api.spec import DistillationJobSpec, TaskSpec
from stratos.contracts.runs import RunStatus, StageRun
from stratos.local.executor import LocalExecutor
from stratos.local.teacher import ProgrammaticTeacher, answer
from stratos.tasks import build_task
from support.jobs import job

TESTS = str(Path(__file__).resolve().parents[1])
SPEC = DistillationJobSpec.model_validate(job()["spec"])


def wait(executor: LocalExecutor, run: StageRun, timeout: float = 30) -> RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = executor.ensure(run, SPEC)
        if status.state in ("Succeeded", "Failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def executor(tmp_path: Path) -> LocalExecutor:
    path = os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")]))
    return LocalExecutor(tmp_path, "dj1", env={"PYTHONPATH": path}, max_attempts=2)


def test_a_stage_runs_once_and_a_second_runner_finds_its_result(tmp_path: Path) -> None:
    run = StageRun("echo", "support.echo_stage", {"x": 1}, candidate="a")
    status = wait(executor(tmp_path), run)
    assert status.state == "Succeeded" and status.result == {"ok": True, "echo": {"x": 1}}
    folder = executor(tmp_path).run_dir(run)
    assert folder.parent == tmp_path / "runs" and folder.name.startswith("dj1-echo-a-")
    assert (folder / "stage.log").exists()
    again = executor(tmp_path)  # a new `stratos run` of the same job: resumes, does not rerun
    assert again.ensure(run, SPEC).state == "Succeeded" and not again.running


def test_a_relative_workdir_is_made_absolute_for_the_stage(tmp_path: Path, monkeypatch: Any) -> None:
    """`stratos run` from a project directory with the default `.stratos/<job>`: the stage program runs
    with the workdir as its current directory, so the config and result paths it gets must be absolute."""
    monkeypatch.chdir(tmp_path)
    local = executor(Path(".stratos") / "dj1")
    assert local.workdir == tmp_path / ".stratos" / "dj1" and local.storage_root == str(local.workdir)
    status = wait(local, StageRun("echo", "support.echo_stage", {"x": 2}, candidate="r"))
    assert status.state == "Succeeded", status.message
    (run_dir,) = (tmp_path / ".stratos" / "dj1" / "runs").glob("dj1-echo-r*")  # name ends in a digest
    log = (run_dir / "stage.log").read_text()
    assert "No such file" not in log


def test_stages_started_side_by_side_get_one_thread_each_unless_the_caller_says(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Student probes (one per student, started together) run with one OpenMP thread each; a stage that
    runs alone (train) keeps torch's default; a value the caller set wins everywhere."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    names = ["OMP_NUM_THREADS", "MKL_NUM_THREADS"]
    local = executor(tmp_path)
    probe = wait(local, StageRun("student-probe", "support.echo_stage", {"env": names}, candidate="s"))
    train = wait(local, StageRun("train", "support.echo_stage", {"env": names}, candidate="s"))
    assert probe.result is not None and probe.result["env"] == {
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    assert train.result is not None and train.result["env"] == {
        "OMP_NUM_THREADS": None,
        "MKL_NUM_THREADS": None,
    }
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    again = wait(executor(tmp_path / "b"), StageRun("student-probe", "support.echo_stage", {"env": names}))
    assert again.result is not None and again.result["env"]["OMP_NUM_THREADS"] == "3"


def test_a_failing_stage_is_retried_then_reported(tmp_path: Path) -> None:
    flaky = StageRun("echo", "support.echo_stage", {"failOnce": str(tmp_path / "marker")}, candidate="f")
    assert wait(executor(tmp_path), flaky).state == "Succeeded"  # failed once, retried
    broken = StageRun("echo", "support.echo_stage", {"fail": True}, candidate="b")
    status = wait(executor(tmp_path), broken)
    assert status.state == "Failed" and "asked to fail" in status.message


def test_programmatic_teacher_explains_known_answers_and_solves_a_fixed_share() -> None:
    task = build_task(TaskSpec(builtin="mahjong", train_size=400, test_size=10))
    samples = task.load("train")
    solved = sum(task.score(answer(task.messages(s)[-1]["content"], accuracy=0.25), s) for s in samples)
    assert 0.15 < solved / len(samples) < 0.35  # a hash picks the share: near 25%, the same every run
    assert all(
        task.score(answer(task.reverse_messages(s)[-1]["content"], accuracy=0.0), s) for s in samples[:50]
    )


def test_programmatic_teacher_speaks_the_openai_api() -> None:
    task = build_task(TaskSpec(builtin="mahjong", train_size=20, test_size=5))
    sample = task.load("train")[0]
    with ProgrammaticTeacher(accuracy=1.0) as teacher:
        client = OpenAI(base_url=teacher.base_url, api_key="EMPTY")
        reply = client.chat.completions.create(model="any", messages=task.messages(sample))  # type: ignore[arg-type]
        assert task.score(reply.choices[0].message.content, sample)
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        assert [m.id for m in client.models.list()] == ["programmatic-mahjong-teacher"]


def test_a_local_run_keeps_its_identity_over_its_attempts_and_says_when_it_ran(tmp_path: Path) -> None:
    # What the machine charges a run by (status.cost.runs): one identity for every attempt of the run,
    # when its first attempt started and its last ended, and what each reported (a failure's too).
    local = executor(tmp_path)
    before = datetime.now(UTC)
    flaky = StageRun("echo", "support.echo_stage", {"failOnce": str(tmp_path / "marker")}, candidate="f")
    first = local.ensure(flaky, SPEC)
    done = wait(local, flaky)
    assert done.state == "Succeeded" and done.attempts == 2
    assert done.run_id is not None and done.run_id == first.run_id
    assert done.started_at is not None and done.ended_at is not None
    assert before - timedelta(seconds=1) <= done.started_at <= done.ended_at <= datetime.now(UTC)
    assert done.reports == (done.result,)
    broken = StageRun("echo", "support.echo_stage", {"fail": True}, candidate="b")
    failed = wait(local, broken)
    assert failed.state == "Failed" and failed.reports == ({"ok": False, "error": "asked to fail"},)
    assert failed.run_id not in (None, done.run_id)
