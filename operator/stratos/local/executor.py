"""Stage runs as local processes: the embedded runner's counterpart of the operator's Jobs.

Each run gets a directory ``<workdir>/runs/<name>/`` holding its config, its log and its result.
A finished run is recognised by its result file, so running the same job again resumes instead of
redoing finished stages; a run whose process is gone without a result is started again (the stage
programs themselves resume from what they already wrote, as they do when a pod restarts).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from stratos.api.spec import DistillationJobSpec
from stratos.contracts.runs import EndpointRequest, EndpointState, ProbeOutcome, RunStatus, StageRun
from stratos.kube.naming import child_name
from stratos.pipeline.stage_students import STUDENT_PROBE
from stratos.pipeline.stage_teachers import TEACHER_EVAL
from stratos.serving.local import LocalServer, LocalServerError, start_local_server
from stratos.serving.probe import probe


@dataclass
class LocalRun:
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    attempts: int = 1
    # Elapsed time of the earlier attempts, and this one's start and (once seen exited) end, monotonic.
    before: float = 0.0
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    # The run's identity and when its first attempt began (wall clock): kept over its attempts.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    began: datetime = field(default_factory=lambda: datetime.now(UTC))

    def seconds(self) -> float:
        """Elapsed time of every attempt so far; an exited process is timed to when it was seen exited."""
        if self.ended is None and self.process.poll() is not None:
            self.ended = time.monotonic()
        return self.before + ((self.ended or time.monotonic()) - self.started)


#: Stages the machine starts side by side, one per candidate (the teacher evaluations, the student
#: probes). Each gets one torch/OpenMP thread unless the caller's environment says otherwise: two
#: processes each spinning a thread per core on the same cores slow a tiny model's decoding by an order of
#: magnitude (measured on two cores: the two student probes of `make run` took 55 s one time and 5 m 45 s
#: another). The stages that run alone (synthesize, train, evaluate) keep torch's default.
SIDE_BY_SIDE_STAGES = frozenset({TEACHER_EVAL, STUDENT_PROBE})
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class LocalExecutor:
    """Runs stage programs as subprocesses of this Python, with the job's workdir as storage."""

    workdir: Path
    job_name: str
    env: dict[str, str] = field(default_factory=dict)
    max_attempts: int = 3
    running: dict[str, LocalRun] = field(default_factory=dict)
    # Runs that ended with their result: kept for the time they took (charged at the node's price).
    finished: dict[str, LocalRun] = field(default_factory=dict)
    server: LocalServer | None = None

    def __post_init__(self) -> None:
        # Stage programs run with the workdir as their current directory, and every path they are given
        # (config, result, storage root, dataset and model paths under it) must mean the same file there
        # as here: so the workdir is absolute, whatever directory the caller ran from.
        self.workdir = Path(self.workdir).resolve()

    @property
    def storage_root(self) -> str:
        return str(self.workdir)

    def storage_error(self, spec: DistillationJobSpec) -> str | None:
        return None  # the workdir is the storage

    def run_dir(self, run: StageRun) -> Path:
        # One workdir per job: the "uid" only has to be constant.
        return self.workdir / "runs" / child_name(self.job_name, "local", run.stage, run.candidate)

    def ensure(self, run: StageRun, spec: DistillationJobSpec) -> RunStatus:
        key = self.run_dir(run).name
        status = self._ensure(run)
        live = self.running.get(key) or self.finished.get(key)
        if live is None:
            return status
        seconds = live.seconds()
        ended = None
        if live.ended is not None:  # exited: its end, on the wall clock
            ended = datetime.now(UTC) - timedelta(seconds=time.monotonic() - live.ended)
        return dataclasses.replace(
            status,
            seconds=seconds,
            attempts=live.attempts,
            run_id=live.run_id,
            started_at=live.began,
            ended_at=ended,
            reports=(status.result,) if status.result is not None else (),
        )

    def _ensure(self, run: StageRun) -> RunStatus:
        folder = self.run_dir(run)
        result_file = folder / "result.json"
        key = folder.name
        live = self.running.get(key)
        if live is not None and live.process.poll() is None:
            return RunStatus("Running", message=f"pid {live.process.pid}; log {folder / 'stage.log'}")
        if result_file.exists():
            status = _read_result(result_file, live.process.returncode if live else 0)
            if status.state == "Succeeded" or live is None or live.attempts >= self.max_attempts:
                if live is not None:
                    live.log.close()
                    live.seconds()  # timed to now, if not yet seen exited
                    self.finished[key] = self.running.pop(key)
                return status
        attempts = live.attempts + 1 if live else 1
        if live is not None:
            live.log.close()
            if attempts > self.max_attempts:
                return RunStatus(
                    "Failed", message=f"exited {live.process.returncode} {self.max_attempts} times"
                )
        self.running[key] = self._start(run, folder, attempts)
        if live is not None:  # another attempt of the same run
            self.running[key].before = live.seconds()
            self.running[key].run_id, self.running[key].began = live.run_id, live.began
        return RunStatus("Running", message=f"started (attempt {attempts}); log {folder / 'stage.log'}")

    def _start(self, run: StageRun, folder: Path, attempts: int) -> LocalRun:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(run.config, indent=1, sort_keys=True))
        result = folder / "result.json"
        result.unlink(missing_ok=True)
        env = {**os.environ, **self.env, "STRATOS_STORAGE_DIR": str(self.workdir)}
        if run.stage in SIDE_BY_SIDE_STAGES:
            for variable in THREAD_VARIABLES:
                env.setdefault(variable, "1")
        for secret in run.secret_env:  # locally, a "secret" is an environment variable of the runner
            env.setdefault(secret.env, os.environ.get(secret.env, ""))
        log = (folder / "stage.log").open("ab")
        cmd = [
            sys.executable,
            "-m",
            run.program,
            "--config",
            str(folder / "config.json"),
            "--result",
            str(result),
        ]
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        return LocalRun(process, log, attempts)

    def cancel_runs(self) -> None:
        for live in self.running.values():
            if live.process.poll() is None:
                live.process.terminate()

    def ensure_endpoint(self, request: EndpointRequest, spec: DistillationJobSpec) -> EndpointState:
        """Serve the merged weights with ``transformers serve`` on localhost (started once)."""
        if self.server is not None and self.server.process.poll() is None:
            return EndpointState("Ready", url=self.server.base_url)
        if request.engine != "transformers":
            return EndpointState("Failed", message="local runs serve with serving.engine: transformers")
        if not request.merged_path:
            return EndpointState("Failed", message="no merged weights to serve (the train stage saves them)")
        try:
            self.server = start_local_server(
                Path(request.merged_path), model_name=request.model_name, env=self.env, ready_timeout=300
            )
        except LocalServerError as err:
            return EndpointState("Failed", message=str(err)[-1000:])
        return EndpointState("Ready", url=self.server.base_url)

    def remove_endpoint(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def probe_endpoint(self, url: str, model: str) -> ProbeOutcome:
        return probe(url, model)

    def stop(self) -> None:
        self.remove_endpoint()
        for live in self.running.values():
            if live.process.poll() is None:
                live.process.terminate()
        for live in self.running.values():
            try:
                live.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                live.process.kill()
            live.log.close()
        self.running.clear()


def _read_result(path: Path, returncode: int | None) -> RunStatus:
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        return RunStatus("Failed", message=f"unreadable result {path}: {err}")
    if not isinstance(result, dict):
        return RunStatus("Failed", message=f"result {path} is not an object")
    if returncode not in (0, None) or result.get("ok") is False:
        return RunStatus("Failed", result=result, message=str(result.get("error", f"exited {returncode}")))
    return RunStatus("Succeeded", result=result)
