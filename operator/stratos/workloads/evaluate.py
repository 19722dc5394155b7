"""Evaluation stage: the trained student's accuracy on held-out data (README "The decisions" 5).

``python -m stratos.workloads.evaluate --config CONFIG [--result /dev/termination-log]``

The student (base model plus the LoRA adapter the train stage saved) answers the task's held-out split
(``test``: the Mahjong generator's test hands, GSM8K's test file, a jsonl task's test file or its seeded
10% holdout) with the same prompts as everywhere else, decoded greedily; the task plug-in extracts and
verifies each answer. With ``baseline`` the base model without the adapter answers the same questions
too (the adapter is switched off, not reloaded), so the result shows what training changed. The
controller compares ``accuracy`` with ``minAccuracy``; this stage only measures.

``maxSamples`` keeps the first N samples of the split (its order is stable). ``maxNewTokens`` bounds each
answer; the controller derives it from what the student was trained to write (the train stage's
``longestTargetTokens``, see ``stratos.decide.evaluation``), 512 when run by hand without it.
Predictions go to ``<outputDir>/evaluate/<student>/predictions.jsonl``.

Config (camelCase JSON)::

    {"student": "llama-3.2-3b", "modelUri": null (default: the adapter's stratos.json), "adapterPath":
     "/var/lib/stratos/jobs/x/train/adapter", "task": {<TaskSpec JSON>}, "dataRoot": "/var/lib/stratos",
     "split": "test", "maxSamples": null, "maxNewTokens": 512, "batchSize": 8, "baseline": false,
     "outputDir": "/var/lib/stratos/jobs/x"}

Result::

    {"ok": true, "student": ..., "accuracy": 0.61, "samples": 100, "correct": 61,
     "baseline": {"accuracy": 0.12, "correct": 12} | null, "tokensPerSecond": 950.1, "seconds": 40.2,
     "adapterPath": ..., "predictionsPath": ...}
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from stratos.contracts.evaluate import EvaluateConfig, EvaluateResult
from stratos.contracts.stage_io import ConfigError
from stratos.workloads.common import run_stage

log = logging.getLogger("stratos.workloads.evaluate")

PREDICTIONS_FILE = "predictions.jsonl"


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    from stratos.training.generation import generate
    from stratos.training.models import load_for_inference, quiet_libraries
    from stratos.training.tasking import ensure_dir, load_task

    began = time.monotonic()
    quiet_libraries()
    if not config.model_uri and not config.adapter_path:
        raise ConfigError("evaluate needs modelUri, adapterPath, or both")
    task, _ = load_task(config.task, data_root=config.data_root)
    samples = task.load(config.split)
    if config.max_samples is not None:
        samples = samples[: config.max_samples]
    if not samples:
        raise ConfigError(f"the task's {config.split} split is empty")
    model, tokenizer, _ = load_for_inference(
        config.model_uri, adapter=config.adapter_path, data_root=config.data_root
    )
    prompts = [task.messages(s) for s in samples]
    log.info("%s: evaluating on %d %s samples", config.student, len(samples), config.split)

    def run(label: str, adapter_off: bool) -> tuple[list[Any], Any]:
        def progress(done: int, total: int) -> None:
            log.info("%s (%s): %d/%d answered", config.student, label, done, total)

        context = model.disable_adapter() if adapter_off else nullcontext()
        with context:
            return generate(
                model,
                tokenizer,
                prompts,
                max_new_tokens=config.max_new_tokens,
                batch_size=config.batch_size,
                progress=progress,
            )

    answers, stats = run("student", adapter_off=False)
    graded = [_grade(task, s, a.text) for s, a in zip(samples, answers, strict=True)]
    correct = sum(ok for ok, _ in graded)
    baseline = None
    base_graded: list[tuple[bool, str | None]] = []
    if config.baseline and config.adapter_path:
        base_answers, _ = run("baseline", adapter_off=True)
        base_graded = [_grade(task, s, a.text) for s, a in zip(samples, base_answers, strict=True)]
        base_correct = sum(ok for ok, _ in base_graded)
        baseline = {"accuracy": base_correct / len(samples), "correct": base_correct}

    out_dir = ensure_dir(Path(config.output_dir) / "evaluate" / config.student)
    path = out_dir / PREDICTIONS_FILE
    with open(path, "w", encoding="utf-8") as fh:
        for i, (sample, answer, (ok, extracted)) in enumerate(zip(samples, answers, graded, strict=True)):
            row = {
                "id": sample.id,
                "expected": sample.answer,
                "extracted": extracted,
                "correct": ok,
                "text": answer.text,
            }
            if base_graded:
                row["baselineCorrect"] = base_graded[i][0]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    n = len(samples)
    log.info(
        "%s: %d/%d correct (%.1f%%)%s",
        config.student,
        correct,
        n,
        100 * correct / n,
        f", baseline {baseline['correct']}/{n}" if baseline else "",
    )
    return EvaluateResult(
        student=config.student,
        accuracy=correct / n,
        samples=n,
        correct=correct,
        baseline=baseline,
        tokens_per_second=round(stats.tokens_per_second, 3),
        seconds=round(time.monotonic() - began, 3),
        adapter_path=config.adapter_path,
        predictions_path=str(path.resolve()),
    ).dump()


def _grade(task: Any, sample: Any, text: str) -> tuple[bool, str | None]:
    extracted = task.extract(text) if text else None
    return bool(task.verify(extracted, sample)), extracted


def main(argv: list[str] | None = None) -> int:
    return run_stage("evaluate", EvaluateConfig, evaluate, argv)


if __name__ == "__main__":
    raise SystemExit(main())
