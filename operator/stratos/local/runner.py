"""``stratos run``: the operator's stage machine on one machine, stages as local processes.

The same ``reconcile`` the operator calls drives the job; a ``LocalExecutor`` stands in for Jobs, an
inventory file for the cluster's Nodes, and ``<workdir>/status.json`` for the object's status, so a
second run of the same job resumes where the first stopped.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from stratos.local.executor import LocalExecutor
from stratos.local.teacher import DEFAULT_ACCURACY
from stratos.pipeline.context import Event
from stratos.pipeline.machine import reconcile
from stratos.pipeline.stages import Stage, parse_stage

TERMINAL_PHASES = {"Serving", "Failed"}


def default_inventory() -> Path:
    return Path(str(resources.files("stratos.local") / "data" / "nodes-paper-mix.yaml"))


@dataclass
class RunOptions:
    job: dict[str, Any]
    nodes: list[dict[str, Any]]
    workdir: Path
    programmatic_teacher: bool = False
    teacher_accuracy: float = DEFAULT_ACCURACY
    tiny_students: bool = False
    interval: float = 0.5


def _local_teachers(job: dict[str, Any]) -> list[tuple[str, int]]:
    out = []
    for teacher in job["spec"].get("teachers", []):
        url = urlparse(teacher["endpoint"]["baseURL"])
        if url.hostname in ("127.0.0.1", "localhost") and url.port:
            out.append((teacher["name"], url.port))
    return out


@contextmanager
def programmatic_teachers(job: dict[str, Any], accuracy: float, console: Console) -> Iterator[None]:
    from stratos.local.teacher import ProgrammaticTeacher

    with ExitStack() as stack:
        for name, port in _local_teachers(job):
            teacher = stack.enter_context(ProgrammaticTeacher(port=port, accuracy=accuracy))
            console.print(
                f"[yellow]teacher {name}: a PROGRAMMATIC Mahjong teacher (exact solver, not an LLM) at "
                f"{teacher.base_url}; it explains known answers and solves {accuracy:.0%} of hands alone[/]"
            )
        yield


def build_tiny_students(job: dict[str, Any], workdir: Path, console: Console) -> None:
    """Random-initialised tiny models for students whose storage path does not exist yet.

    For the Mahjong task the tokenizer is fitted to the task (a token per tile and per fixed phrase,
    ``stratos.training.tiny.mahjong_tokenizer``); for other tasks it is a byte-level BPE trained on the
    built-in tasks' text. Either way the model is written as an ordinary checkpoint that the stage
    programs load like any other.
    """
    from stratos.training.tiny import TinySpec, build_tiny_model

    fitted = (job["spec"].get("task") or {}).get("builtin") == "mahjong"
    for student in job["spec"].get("students", []):
        uri, model = student["model"]["uri"], student["model"]
        if not uri.startswith("/"):
            continue
        path = workdir / uri.lstrip("/")
        if (path / "config.json").exists():
            continue
        spec = TinySpec(
            hidden_size=int(model.get("hiddenSize") or 64),
            layers=int(model.get("layers") or 2),
            heads=int(model.get("numAttentionHeads") or 4),
            kv_heads=int(model.get("numKeyValueHeads") or 2),
            intermediate_size=int(model.get("intermediateSize") or 2 * int(model.get("hiddenSize") or 64)),
            vocab_size=int(model.get("vocabSize") or (336 if fitted else 1024)),
            tokenizer="mahjong" if fitted else "bpe",
        )
        build_tiny_model(path, spec)
        params = _parameters(path)
        tokenizer = "a tokenizer fitted to the Mahjong task" if fitted else "a tokenizer trained on the spot"
        console.print(
            f"[yellow]student {student['name']}: a tiny RANDOM-INITIALISED model ({params:,} parameters, "
            f"{tokenizer}) built at {path}[/]"
        )


def _parameters(path: Path) -> int:
    """Parameter count of a saved checkpoint, from its safetensors header (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in path.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                total += _numel(f.get_slice(name).get_shape())
    return total


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _render_events(console: Console, events: list[Event]) -> None:
    for event in events:
        style = "red" if event.type == "Warning" else "green"
        console.print(f"[{style}]{event.reason}[/]: {event.message}")


class StageBars:
    """Progress bars for stages whose log reports ``done/total`` (training steps, synthesised examples,
    answered samples); other log lines are printed as they come."""

    _COUNT = re.compile(r"\b(\d+)/(\d+)\b")

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console,
        )  # fmt: skip
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StageBars:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, name: str, line: str) -> bool:
        match = self._COUNT.search(line)
        if match is None or int(match.group(2)) == 0:
            return False
        done, total = int(match.group(1)), int(match.group(2))
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total)
        self.progress.update(self.tasks[name], completed=done, total=total)
        return True


def _progress(executor: LocalExecutor, seen: dict[str, str]) -> list[tuple[str, str]]:
    """The last log line of every running stage that has written a new one since the last tick."""
    lines = []
    for name in executor.running:
        log = executor.workdir / "runs" / name / "stage.log"
        try:
            tail = log.read_text(errors="replace").strip().splitlines()[-1][-200:]
        except (OSError, IndexError):
            continue
        if seen.get(name) != tail:
            seen[name] = tail
            lines.append((name, tail))
    return lines


def run_local(opts: RunOptions, console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    opts.workdir = opts.workdir.resolve()  # stage programs run elsewhere: every path they get is absolute
    job = opts.job
    meta = job.setdefault("metadata", {})
    meta.setdefault("namespace", "local")
    meta.update(uid="local", generation=1)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    status_file = opts.workdir / "status.json"
    if status_file.exists():
        job["status"] = json.loads(status_file.read_text())
        console.print(f"resuming from {status_file} (stage {job['status'].get('stage')})")
    executor = LocalExecutor(
        opts.workdir, meta["name"], env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    )
    with ExitStack() as stack:
        if opts.programmatic_teacher:
            stack.enter_context(programmatic_teachers(job, opts.teacher_accuracy, console))
        if opts.tiny_students:
            build_tiny_students(job, opts.workdir, console)
        stack.callback(executor.stop)
        last_stage, idle = None, 0
        seen: dict[str, str] = {}
        bars = stack.enter_context(StageBars(console))
        while True:
            outcome = reconcile(job, nodes=opts.nodes, executor=executor)
            changed = outcome.status != job.get("status")
            job["status"] = outcome.status
            _write_atomically(status_file, outcome.status)
            _render_events(console, outcome.events)
            stage = parse_stage(outcome.status.get("stage"))
            if stage != last_stage:
                console.print(f"[bold]stage {stage.value}[/] ({outcome.status.get('phase')})")
                last_stage = stage
            for name, line in _progress(executor, seen):
                if not bars.update(name, line):
                    console.print(f"  {name}: {line}", highlight=False, overflow="ellipsis", no_wrap=True)
            if outcome.status.get("phase") in TERMINAL_PHASES or stage is Stage.FAILED:
                if outcome.status.get("phase") == "Serving":
                    ask_endpoint(job, outcome.status, console)
                break
            idle = 0 if changed or executor.running else idle + 1
            if idle >= 3:  # nothing runs and nothing changes: the job cannot progress here
                console.print(f"[red]stopped: {outcome.status.get('message') or 'no progress possible'}[/]")
                break
            time.sleep(opts.interval)
    return dict(job["status"])


def ask_endpoint(job: dict[str, Any], status: dict[str, Any], console: Console) -> None:
    """One held-out question to the served student through the ``openai`` client, to show it answers."""
    from openai import OpenAI

    from stratos.api.spec import TaskSpec
    from stratos.tasks import build_task

    endpoint = status.get("endpoint") or {}
    task = build_task(TaskSpec.model_validate(job["spec"].get("task") or {}))
    sample = task.load("test")[0]
    client = OpenAI(base_url=endpoint["url"], api_key="EMPTY", timeout=120)
    try:
        reply = client.chat.completions.create(
            model=endpoint["model"],
            messages=task.messages(sample),  # type: ignore[arg-type]
            max_tokens=512,
        )
    except Exception as err:  # the summary still shows what the probe measured
        console.print(f"[red]the endpoint did not answer: {err}[/]")
        return
    text = (reply.choices[0].message.content or "").strip()
    verdict = "correct" if task.score(text, sample) else f"expected {sample.answer}"
    console.print(
        f"\n[bold]Asked the endpoint[/bold] ({endpoint['model']}): {sample.question.splitlines()[0]}"
    )
    console.print(f"  reply: …{text[-300:]}\n  ({verdict})", highlight=False)


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)
