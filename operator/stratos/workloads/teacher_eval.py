"""Teacher evaluation stage: how well does one teacher solve the task? (paper, "Teacher Selector").

``python -m stratos.workloads.teacher_eval --config CONFIG [--result /dev/termination-log]``

The teacher answers the deterministic probe sample (the same samples for every teacher, so their
accuracies are comparable); each answer is extracted and verified by the task plug-in. Every
reasoning trace is appended to ``<outputDir>/teacher-eval/<teacher>/traces.jsonl`` as soon as it
arrives, flushed and fsynced, so a pod that is restarted (preemption, node loss, a retried Job)
continues where it stopped instead of paying for the same tokens twice; the traces also feed the
student probe, which shows students the chosen teacher's reasoning. Token counts are stored per
trace, so the result covers the whole evaluation even when part of it ran in an earlier pod.

Config (camelCase JSON)::

    {"teacher": "deepseek-r1", "baseURL": "https://.../v1", "model": "deepseek-reasoner",
     "apiKeyEnv": "TEACHER_API_KEY", "costPerMillionTokens": 2.19, "maxConcurrency": 8,
     "task": {<TaskSpec JSON>}, "sampleSize": 50, "seed": 0, "dataRoot": "/data",
     "outputDir": "/data/jobs/x", "timeout": 120, "maxTokens": 2048, "temperature": 0.0,
     "maxRetries": 5, "retryInitialDelay": 1.0}

Result::

    {"ok": true, "teacher": ..., "accuracy": 0.3, "samples": 20, "correct": 6, "promptTokens": ...,
     "completionTokens": ..., "costUsd": ..., "tracesPath": ..., "requests": <made by this run>,
     "resumed": <traces reused>, "rejected": <requests the endpoint refused>}
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stratos.contracts.teacher_eval import TeacherEvalConfig, TeacherEvalResult
from stratos.llm.client import (
    TeacherClient,
    TeacherRequestRejected,
    TeacherUnavailable,
    cost_usd,
)
from stratos.tasks import Sample, Task
from stratos.training.tasking import load_task, probe_set
from stratos.workloads.common import run_stage

log = logging.getLogger("stratos.workloads.teacher_eval")

TRACES_FILE = "traces.jsonl"


@dataclass(frozen=True)
class Trace:
    id: str
    correct: bool
    extracted: str | None
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Trace:
        return cls(
            id=str(row["id"]),
            correct=bool(row.get("correct", False)),
            extracted=row.get("extracted"),
            prompt_tokens=int(row.get("promptTokens", 0)),
            completion_tokens=int(row.get("completionTokens", 0)),
            error=row.get("error"),
        )


def traces_path(output_dir: str | os.PathLike[str], teacher: str) -> Path:
    return Path(output_dir) / "teacher-eval" / teacher / TRACES_FILE


def load_traces(path: Path) -> dict[str, Trace]:
    """Traces already on disk, last line per id winning; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("dropping a partial trace line at the end of %s", path)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    traces: dict[str, Trace] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            trace = Trace.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        traces[trace.id] = trace
    return traces


def _append(fh: IO[str], row: Mapping[str, Any]) -> None:
    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def probe_samples(config: TeacherEvalConfig) -> tuple[Task, list[Sample]]:
    """The task and its probe sample; ``sampleSize``/``seed`` in the config override the task spec's
    for the choice of samples (the data itself is generated or loaded from the task spec alone)."""
    task, spec = load_task(config.task, data_root=config.data_root)
    return task, probe_set(task, spec, sample_size=config.sample_size, seed=config.seed)


async def evaluate(config: TeacherEvalConfig) -> dict[str, Any]:
    task, samples = probe_samples(config)
    path = traces_path(config.output_dir, config.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {i: t for i, t in load_traces(path).items() if t.error is None}
    wanted = {s.id for s in samples}
    resumed = {i: t for i, t in done.items() if i in wanted}
    todo = [s for s in samples if s.id not in resumed]
    log.info(
        "teacher %s: %d probe samples, %d already answered, %d to ask",
        config.name,
        len(samples),
        len(resumed),
        len(todo),
    )
    fresh: dict[str, Trace] = {}
    if todo:
        client = config.client()
        async with client:
            with open(path, "a", encoding="utf-8") as fh:
                fresh = await _ask_all(client, task, todo, fh, config)
    traces = [resumed.get(s.id) or fresh[s.id] for s in samples]
    return summarise(config, traces, path, requests=len(fresh), resumed=len(resumed))


async def _ask_all(
    client: TeacherClient, task: Task, todo: list[Sample], fh: IO[str], config: TeacherEvalConfig
) -> dict[str, Trace]:
    out: dict[str, Trace] = {}
    step = max(1, len(todo) // 10)

    async def one(sample: Sample) -> None:
        row: dict[str, Any] = {"id": sample.id, "question": sample.question, "expected": sample.answer}
        try:
            reply = await client.chat(
                task.messages(sample), max_tokens=config.max_tokens, temperature=config.temperature
            )
        except TeacherRequestRejected as err:
            row.update(correct=False, extracted=None, text="", promptTokens=0, completionTokens=0)
            row["error"] = str(err)
        else:
            extracted = task.extract(reply.text) if reply.text else None
            if extracted is None and reply.reasoning:
                extracted = task.extract(reply.reasoning)
            if reply.reasoning:
                row["reasoning"] = reply.reasoning
            row.update(
                correct=task.verify(extracted, sample),
                extracted=extracted,
                text=reply.text,
                promptTokens=reply.prompt_tokens,
                completionTokens=reply.completion_tokens,
            )
        _append(fh, row)
        out[sample.id] = Trace.from_json(row)
        if len(out) % step == 0 or len(out) == len(todo):
            log.info(
                "teacher %s: %d/%d answered, %d correct so far",
                config.name,
                len(out),
                len(todo),
                sum(t.correct for t in out.values()),
            )

    try:
        async with asyncio.TaskGroup() as group:
            for sample in todo:
                group.create_task(one(sample))
    except BaseExceptionGroup as group_error:
        # One failure cancels the rest; report the failure itself, not the group around it.
        raise _first_leaf(group_error) from None
    rejected = [t for t in out.values() if t.error]
    if rejected and len(rejected) == len(out):
        raise TeacherUnavailable(f"teacher {config.name}: every request was rejected ({rejected[0].error})")
    return out


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def summarise(
    config: TeacherEvalConfig, traces: Iterable[Trace], path: Path, *, requests: int, resumed: int
) -> dict[str, Any]:
    traces = list(traces)
    correct = sum(t.correct for t in traces)
    prompt = sum(t.prompt_tokens for t in traces)
    completion = sum(t.completion_tokens for t in traces)
    samples = len(traces)
    return TeacherEvalResult(
        teacher=config.name,
        accuracy=correct / samples if samples else 0.0,
        samples=samples,
        correct=correct,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=cost_usd(prompt + completion, config.cost_per_million_tokens),
        traces_path=str(path.resolve()),
        requests=requests,
        resumed=resumed,
        rejected=sum(1 for t in traces if t.error),
    ).dump()


def main(argv: list[str] | None = None) -> int:
    return run_stage("teacher_eval", TeacherEvalConfig, evaluate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
