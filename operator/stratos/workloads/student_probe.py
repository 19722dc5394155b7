"""Student probe stage: can this student follow the chosen teacher's reasoning? (paper, Table 1)

``python -m stratos.workloads.student_probe --config CONFIG [--result /dev/termination-log]``

The paper's student selector drops students that cannot use reasoning-rich supervision: each probe
question goes to the student with the teacher's reasoning steps inserted into the prompt
(``Task.messages(sample, reasoning=...)``, which removes the teacher's final answer line so the student
must finish the solution itself), and the student's accuracy is compared with ``minAccuracy`` by the
controller. The probe questions are exactly teacher-eval's (same sample size and seed), so the
teacher's traces (``<outputDir>/teacher-eval/<teacher>/traces.jsonl``, one JSON object per line with
``id`` and the reasoning ``text``) line up by sample id. A question without a usable trace (the
teacher's request failed, or ``correctTracesOnly`` and the teacher was wrong) is asked without
reasoning; the result counts how many had it. Without ``tracesPath`` the probe measures the bare
student (Table 1's baseline column).

Generation is batched and greedy. ``tokensPerSecond`` is the decode throughput measured here
(generated tokens per second of generation, at ``batchSize``), a measured counterpart of the catalog
estimate the selector uses. Each answer goes to ``<outputDir>/student-probe/<student>/answers.jsonl``.

Config (camelCase JSON)::

    {"student": "llama-3.2-3b", "modelUri": "hf://meta-llama/Llama-3.2-3B-Instruct",
     "task": {<TaskSpec JSON>}, "sampleSize": 50, "seed": 0, "dataRoot": "/var/lib/stratos",
     "tracesPath": "/var/lib/stratos/jobs/x/teacher-eval/gpt-4o/traces.jsonl",
     "correctTracesOnly": false, "maxNewTokens": 512, "batchSize": 8, "outputDir": "/var/lib/stratos/jobs/x"}

Result::

    {"ok": true, "student": ..., "accuracy": 0.42, "samples": 50, "correct": 21, "withReasoning": 50,
     "tokensPerSecond": 812.5, "generatedTokens": 10234, "seconds": 31.2, "answersPath": ...}
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from stratos.contracts.stage_io import ConfigError
from stratos.contracts.student_probe import StudentProbeConfig, StudentProbeResult
from stratos.workloads.common import run_stage

log = logging.getLogger("stratos.workloads.student_probe")

ANSWERS_FILE = "answers.jsonl"


def load_reasoning(path: Path, *, correct_only: bool) -> dict[str, str]:
    """Sample id -> the teacher's reasoning text, from teacher-eval's traces (last line per id wins).

    Failed requests (``error``) and empty texts are skipped; a torn last line (a killed writer) or a
    malformed line is ignored rather than failing the probe.
    """
    if not path.is_file():
        raise ConfigError(f"tracesPath {path} does not exist; run teacher-eval first or omit tracesPath")
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or "id" not in row:
            continue
        text = row.get("text") or ""
        usable = not row.get("error") and text.strip() and (row.get("correct") or not correct_only)
        if usable:
            out[str(row["id"])] = str(text)
        else:
            out.pop(str(row["id"]), None)
    return out


def probe(config: StudentProbeConfig) -> dict[str, Any]:
    from stratos.training.generation import generate
    from stratos.training.models import load_for_inference, quiet_libraries
    from stratos.training.tasking import ensure_dir, load_task, local_file, probe_set

    began = time.monotonic()
    quiet_libraries()
    task, spec = load_task(config.task, data_root=config.data_root)
    samples = probe_set(task, spec, sample_size=config.sample_size, seed=config.seed)
    reasoning: dict[str, str] = {}
    if config.traces_path:
        traces = local_file(config.traces_path, data_root=config.data_root)
        reasoning = load_reasoning(traces, correct_only=config.correct_traces_only)
    with_reasoning = sum(1 for s in samples if s.id in reasoning)
    log.info(
        "student %s: %d probe samples, %d with the teacher's reasoning",
        config.student,
        len(samples),
        with_reasoning,
    )

    model, tokenizer, _ = load_for_inference(config.model_uri, data_root=config.data_root)
    prompts = [task.messages(s, reasoning=reasoning.get(s.id)) for s in samples]

    def progress(done: int, total: int) -> None:
        log.info("student %s: %d/%d answered", config.student, done, total)

    answers, stats = generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        progress=progress,
    )
    out_dir = ensure_dir(Path(config.output_dir) / "student-probe" / config.student)
    answers_path = out_dir / ANSWERS_FILE
    correct = 0
    with open(answers_path, "w", encoding="utf-8") as fh:
        for sample, answer in zip(samples, answers, strict=True):
            extracted = task.extract(answer.text) if answer.text else None
            ok = task.verify(extracted, sample)
            correct += ok
            fh.write(
                json.dumps(
                    {
                        "id": sample.id,
                        "expected": sample.answer,
                        "extracted": extracted,
                        "correct": ok,
                        "withReasoning": sample.id in reasoning,
                        "newTokens": answer.new_tokens,
                        "text": answer.text,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    n = len(samples)
    log.info("student %s: %d/%d correct, %.1f tokens/s", config.student, correct, n, stats.tokens_per_second)
    return StudentProbeResult(
        student=config.student,
        accuracy=correct / n if n else 0.0,
        samples=n,
        correct=correct,
        with_reasoning=with_reasoning,
        tokens_per_second=round(stats.tokens_per_second, 3),
        generated_tokens=stats.new_tokens,
        seconds=round(time.monotonic() - began, 3),
        answers_path=str(answers_path.resolve()),
    ).dump()


def main(argv: list[str] | None = None) -> int:
    return run_stage("student_probe", StudentProbeConfig, probe, argv)


if __name__ == "__main__":
    raise SystemExit(main())
