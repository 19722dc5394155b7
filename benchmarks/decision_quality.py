"""Decision quality by the paper's Table 4 method: Stratos against accuracy-first, cost-first and random.

The paper compares four "strategy selection methods" on accuracy, latency, cost, training time and a
weighted overall score (Table 4: Stratos 0.55, accuracy-first 0.25, cost-first 0.37, random 0.34, "at
least 22%" better), without saying how the metrics are normalised or weighted. This script rebuilds the
experiment from stated assumptions and the project's real decision code, and reports what it gets.

The job. ``examples/gsm8k-alignment.yaml``: the paper's in-domain experiment (GSM8K; teachers GPT-4o,
Qwen-72B, Llama-3.1-405B; students Llama-3.2-1B, Qwen-2.5-1.5B, Llama-3.2-3B, Llama-3.1-8B; 10,000
samples, 2 epochs, LoRA SFT; sampleSize 200; minTokensPerSecond 30; maxTrainingTime 4h; maxHourlyCost
3.0; maxLatencyMs 100; cost window 0.2; weights 0.5/0.2/0.3). One change in the headline configuration:
``minAccuracy`` 0.58 (the example's own value; see "Why A = 0.58" below); A = 0.65 is reported too.
Table 4's accuracies (59%, 80%, 42%) are GSM8K-level, so this is the scenario it describes.

The cloud (per seed). 3,732 nodes from ``benchmarks.cloud.make_cloud``: the paper's six GPU models in
assumed shares, 1/2/4/8 GPUs, cost = list price x GPUs x lognormal(0, 0.2), latency Uniform(5, 230) ms.

Teachers. The paper gives no GSM8K accuracies for its teachers (its Table 3 is Mahjong: GPT-4o 4%,
Claude 3.5 Sonnet 9%, DeepSeek-R1 21%; it only says all GSM8K teachers exceed 65% and Qwen-72B is the
cheapest). Assumed true GSM8K accuracies, rounded from public reports: GPT-4o 0.92, Qwen-72B 0.89,
Llama-3.1-405B 0.96; prices (USD per 1M tokens) from the example: 10, 1.2, 3.5. A teacher evaluation
observes Binomial(sampleSize, accuracy) / sampleSize.

Students (paper Tables 1 and 2). Probe accuracy with the teacher's reasoning in the prompt (Table 1, "With
8B CoT"): 1B 44.20%, 1.5B 57.32%, 3B 59.67%, 8B 61.49% (the 8B wrote the CoT; its own accuracy). A probe
observes Binomial(sampleSize, p) / sampleSize. Accuracy after distillation (Table 2, GSM8K): without
distillation 40.79 / 55.34 / 30.02 / 61.49%, after LoRA SFT 35.48 / 64.67 / 71.95 / 78.77%, after GRPO
45.79 / 61.39 / 65.81 / 61.94%, all measured with Qwen-72B as teacher.

Accuracy model. final = base + (distilled - base) x (teacher accuracy / 0.89): the gain of Table 2 scales
with the teacher's true accuracy relative to Qwen-72B's (an assumption that rewards accurate teachers, i.e.
favours accuracy-first). Variant ``table``: the gain does not depend on the teacher. Clipped to [0, 1].

Strategies (all see the same cloud, the same teacher evaluations and the job's hard node constraints:
per-GPU memory for the smallest student, maxHourlyCost, maxLatencyMs):

- Stratos: the project's functions, as the operator calls them: ``select_server`` on the NodeFacts (with
  ``required_gpu_memory_gib``), ``select_teacher`` on the evaluations, ``select_strategy``,
  ``student_fit`` + ``assess_student`` (the estimators) + ``select_student`` on the probe accuracies. When
  no student survives, Stratos delivers no model in that seed (the operator fails the job).
- accuracy-first: the most accurate teacher (by its evaluation), the feasible node with the most compute
  (GPUs x BF16 TFLOPS; ties: cheaper), the largest student that fits that node.
- cost-first: the cheapest feasible node, the cheapest teacher, the smallest student.
- random: a feasible node, a teacher and a student that fits the node, uniformly at random.

Metrics per run: accuracy (the accuracy model, for the chosen student, algorithm and teacher); latency
(the node's, ms); training time t (``training_time_hours`` on the node, hours); cost (USD) = node hourly
cost x (t + probe time) + teacher tokens x price, with 1,000 tokens per synthesised sample (targetSamples)
and per evaluated sample (sampleSize per teacher; paid by Stratos and accuracy-first, which evaluate
teachers); probe time = sampleSize x 128 tokens / decode tokens/s per probed student (Stratos only).

Score. Per seed, each metric is min-max normalised over the strategies that delivered a model (1 = best
of them, 0 = worst; all 1 when equal); overall score = 0.4 accuracy + 0.2 latency + 0.2 cost + 0.2 time;
a strategy with no model scores 0 in that seed. Table rows are means over seeds (metrics over the seeds in
which the strategy delivered). Sensitivity: every weight vector on a 0.1 grid of the simplex, and a second
normalisation (ratio to the best: a / a_max, x_min / x for the others).

Why A = 0.58. The project uses one threshold A for teachers, student probes and the result. Table 1's
probe accuracies top out at 61.49%, so with the paper's 65% every student fails the probe and Stratos
delivers nothing; 0.58 is the threshold at which Table 1 separates what the paper calls capable (3B) from
incapable (1B, 1.5B). The paper's final target (A = 0.65) is reported as its own configuration.

Run: ``.venv/bin/python -m benchmarks.decision_quality`` (``--seeds N``; ``--quick``). Prints the tables
and writes benchmarks/results/decision_quality.json.
"""

from __future__ import annotations

import argparse
import copy
import itertools
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from benchmarks.cloud import (
    DISTRIBUTIONS,
    PAPER_CLUSTER_SIZE,
    REPO_ROOT,
    machine,
    make_cloud,
    table,
    write_json,
)
from stratos.api.spec import DistillationJobSpec
from stratos.decide.estimate import decode_tokens_per_second, tokens_for, training_time_hours
from stratos.decide.models import ModelFacts
from stratos.decide.nodes import NodeFacts
from stratos.decide.placement import required_gpu_memory_gib, student_fit
from stratos.decide.servers import select_server
from stratos.decide.strategy import select_strategy
from stratos.decide.students import assess_student, select_student, students_to_probe
from stratos.decide.teachers import TeacherEval, select_teacher

EXAMPLE = REPO_ROOT / "examples" / "gsm8k-alignment.yaml"
STRATEGIES = ("Stratos", "accuracy-first", "cost-first", "random")
METRICS = ("accuracy", "latency", "cost", "time")
WEIGHTS = {"accuracy": 0.4, "latency": 0.2, "cost": 0.2, "time": 0.2}
HEADLINE_MIN_ACCURACY = 0.58
TOKENS_PER_SAMPLE = 1000
PROBE_TOKENS = 128

#: Assumed true GSM8K accuracy of each teacher in the example (see the module docstring).
TEACHER_ACCURACY = {"gpt-4o": 0.92, "qwen-72b": 0.89, "llama-405b": 0.96}
REFERENCE_TEACHER = "qwen-72b"  # the teacher of the paper's Table 2


@dataclass(frozen=True)
class StudentFacts:
    """Paper figures of one student (fractions)."""

    probe: float  # Table 1, with the 8B model's CoT in the prompt
    base: float  # Table 2, no distillation
    sft: float  # Table 2, LoRA SFT
    grpo: float  # Table 2, GRPO


STUDENTS = {
    "llama-3-2-1b": StudentFacts(0.4420, 0.4079, 0.3548, 0.4579),
    "qwen-2-5-1-5b": StudentFacts(0.5732, 0.5534, 0.6467, 0.6139),
    "llama-3-2-3b": StudentFacts(0.5967, 0.3002, 0.7195, 0.6581),
    "llama-3-1-8b": StudentFacts(0.6149, 0.6149, 0.7877, 0.6194),
}

#: The paper's Table 4, for reference: accuracy, latency, cost, time, score.
PAPER_TABLE4 = {
    "Stratos": (0.5924, 20.29, 24, 1.59, 0.55),
    "accuracy-first": (0.8028, 45.44, 645, 40.42, 0.25),
    "cost-first": (0.4236, 90.73, 35, 2.55, 0.37),
    "random": (0.6284, 118.53, 37, 2.44, 0.34),
}


@dataclass(frozen=True)
class Outcome:
    """What one strategy delivered in one seed (``delivered`` False: no model)."""

    delivered: bool
    node: NodeFacts | None = None
    teacher: str | None = None
    student: str | None = None
    algorithm: str = "sft-lora"
    accuracy: float = 0.0
    latency: float = 0.0
    cost: float = 0.0
    time: float = 0.0
    note: str = ""


@dataclass(frozen=True)
class Config:
    """One configuration of the experiment."""

    name: str
    spec: DistillationJobSpec
    accuracy_model: str = "scaled"  # or "table"
    description: str = ""


def example_spec(*, sample_size: int | None = None, **requirements: Any) -> dict[str, Any]:
    """The example's spec as a dict, ``requirements`` keys overridden (None deletes a key)."""
    spec: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"])
    for key, value in requirements.items():
        if value is None:
            spec["requirements"].pop(key, None)
        else:
            spec["requirements"][key] = value
    if sample_size is not None:
        spec["task"]["sampleSize"] = sample_size
    return spec


def configs() -> list[Config]:
    v = DistillationJobSpec.model_validate
    a = HEADLINE_MIN_ACCURACY
    return [
        Config("headline", v(example_spec(minAccuracy=a)), description=f"{EXAMPLE.name}, minAccuracy {a}"),
        Config(
            "paper-threshold",
            v(example_spec(minAccuracy=0.65)),
            description=f"{EXAMPLE.name}, minAccuracy 0.65 (the paper's final target)",
        ),
        Config("threshold-0.55", v(example_spec(minAccuracy=0.55)), description="headline, minAccuracy 0.55"),
        Config(
            "probe-1000-samples",
            v(example_spec(minAccuracy=a, sample_size=1000)),
            description="headline, sampleSize 1000 (less probe noise)",
        ),
        Config(
            "no-node-caps",
            v(example_spec(minAccuracy=a, maxHourlyCost=None, maxLatencyMs=None)),
            description="headline without maxHourlyCost and maxLatencyMs",
        ),
        Config(
            "teacher-independent",
            v(example_spec(minAccuracy=a)),
            "table",
            description="headline; the distillation gain does not depend on the teacher",
        ),
    ]


# ----------------------------------------------------------------------------------------- the models


def final_accuracy(student: str, teacher: str, algorithm: str, model: str) -> float:
    s = STUDENTS[student]
    distilled = s.grpo if algorithm == "grpo" else s.sft
    factor = 1.0 if model == "table" else TEACHER_ACCURACY[teacher] / TEACHER_ACCURACY[REFERENCE_TEACHER]
    return float(min(1.0, max(0.0, s.base + (distilled - s.base) * factor)))


class Job:
    """The job's fixed facts: student shapes, training tokens, the memory floor, prices."""

    def __init__(self, spec: DistillationJobSpec) -> None:
        self.spec = spec
        self.facts = {s.name: ModelFacts.from_spec(s.model) for s in spec.students}
        self.by_size = sorted(self.facts, key=lambda n: self.facts[n].parameters)
        dist = spec.distillation
        self.tokens = tokens_for(dist.target_samples, dist.epochs, dist.sequence_length)
        self.min_memory = required_gpu_memory_gib(spec)
        self.price = {t.name: t.cost_per_million_tokens for t in spec.teachers}
        self.sample_size = spec.task.sample_size
        self.min_accuracy = spec.requirements.min_accuracy
        self.max_hours = spec.requirements.max_training_seconds / 3600

    def feasible(self, nodes: Sequence[NodeFacts]) -> list[NodeFacts]:
        req = self.spec.requirements
        return [
            f
            for f in nodes
            if f.gpu_memory_gib >= self.min_memory
            and (req.max_hourly_cost is None or f.hourly_cost <= req.max_hourly_cost)
            and (req.max_latency_ms is None or f.latency_ms <= req.max_latency_ms)
        ]

    def fits(self, student: str, node: NodeFacts) -> bool:
        return student_fit(self.spec, self.facts[student], node.gpu_memory_gib).fits

    def hours(self, student: str, node: NodeFacts) -> float:
        dist = self.spec.distillation
        return training_time_hours(
            self.facts[student],
            node.gpu,
            node.gpu_count,
            tokens=self.tokens,
            mfu=dist.mfu,
            gradient_checkpointing=dist.gradient_checkpointing,
        )

    def synthesis_usd(self, teacher: str) -> float:
        return self.spec.distillation.target_samples * TOKENS_PER_SAMPLE * self.price[teacher] / 1e6

    def evaluation_usd(self) -> float:
        return sum(self.sample_size * TOKENS_PER_SAMPLE * p / 1e6 for p in self.price.values())

    def outcome(
        self,
        node: NodeFacts,
        teacher: str,
        student: str,
        algorithm: str,
        model: str,
        *,
        extra_usd: float = 0.0,
        extra_hours: float = 0.0,
        note: str = "",
    ) -> Outcome:
        t = self.hours(student, node)
        cost = node.hourly_cost * (t + extra_hours) + self.synthesis_usd(teacher) + extra_usd
        return Outcome(
            True,
            node,
            teacher,
            student,
            algorithm,
            final_accuracy(student, teacher, algorithm, model),
            node.latency_ms,
            cost,
            t,
            note,
        )


def evaluate_teachers(job: Job, rng: np.random.Generator) -> list[TeacherEval]:
    evals = []
    for t in job.spec.teachers:
        correct = int(rng.binomial(job.sample_size, TEACHER_ACCURACY[t.name]))
        evals.append(
            TeacherEval(
                name=t.name,
                accuracy=correct / job.sample_size,
                samples=job.sample_size,
                correct=correct,
                cost_per_million_tokens=t.cost_per_million_tokens,
            )
        )
    return evals


# ------------------------------------------------------------------------------------------ strategies


def stratos(
    job: Job, nodes: Sequence[NodeFacts], evals: Sequence[TeacherEval], rng: np.random.Generator, model: str
) -> Outcome:
    spec = job.spec
    req = spec.requirements
    server = select_server(
        nodes,
        cost_window=spec.servers.cost_window,
        min_gpu_memory_gib=job.min_memory,
        max_hourly_cost=req.max_hourly_cost,
        max_latency_ms=req.max_latency_ms,
    )
    node = server.chosen
    if node is None:
        return Outcome(False, note="no feasible node")
    teacher = select_teacher(evals, min_accuracy=req.min_accuracy)
    if teacher.selected is None:
        return Outcome(False, node=node, note="no teacher")
    strategy = select_strategy(
        teacher.accuracy,
        min_accuracy=req.min_accuracy,
        requested_strategy=spec.distillation.strategy,
        requested_algorithm=spec.distillation.algorithm,
    )
    fits = {s: student_fit(spec, job.facts[s], node.gpu_memory_gib) for s in job.facts}
    probed = students_to_probe(fits)
    probe_hours = 0.0
    assessments = []
    for name in job.facts:
        accuracy = None
        if name in probed:
            accuracy = int(rng.binomial(job.sample_size, STUDENTS[name].probe)) / job.sample_size
            tps = decode_tokens_per_second(job.facts[name], node.gpu)
            probe_hours += job.sample_size * PROBE_TOKENS / tps / 3600
        assessments.append(
            assess_student(
                name,
                job.facts[name],
                fits[name],
                gpu=node.gpu,
                gpu_count=node.gpu_count,
                tokens=job.tokens,
                mfu=spec.distillation.mfu,
                gradient_checkpointing=spec.distillation.gradient_checkpointing,
                accuracy=accuracy,
            )
        )
    student = select_student(
        assessments,
        min_accuracy=req.min_accuracy,
        max_training_hours=job.max_hours,
        min_tokens_per_second=req.min_tokens_per_second,
        weights=req.weights,
    )
    if student.selected is None:
        return Outcome(False, node=node, teacher=teacher.selected, note="no student met the requirements")
    return job.outcome(
        node,
        teacher.selected,
        student.selected,
        strategy.algorithm,
        model,
        extra_usd=job.evaluation_usd(),
        extra_hours=probe_hours,
        note=strategy.selected,
    )


def accuracy_first(
    job: Job, nodes: Sequence[NodeFacts], evals: Sequence[TeacherEval], rng: np.random.Generator, model: str
) -> Outcome:
    feasible = job.feasible(nodes)
    if not feasible:
        return Outcome(False, note="no feasible node")
    teacher = max(evals, key=lambda e: (e.accuracy, -e.cost_per_million_tokens, e.name)).name
    node = min(feasible, key=lambda f: (-f.hardware, f.hourly_cost, f.name))
    fitting = [s for s in job.by_size if job.fits(s, node)]
    if not fitting:
        return Outcome(False, node=node, note="no student fits")
    algorithm = "grpo" if job.spec.distillation.algorithm == "grpo" else "sft-lora"
    return job.outcome(node, teacher, fitting[-1], algorithm, model, extra_usd=job.evaluation_usd())


def cost_first(
    job: Job, nodes: Sequence[NodeFacts], evals: Sequence[TeacherEval], rng: np.random.Generator, model: str
) -> Outcome:
    feasible = job.feasible(nodes)
    if not feasible:
        return Outcome(False, note="no feasible node")
    node = min(feasible, key=lambda f: (f.hourly_cost, f.name))
    teacher = min(job.spec.teachers, key=lambda t: (t.cost_per_million_tokens, t.name)).name
    return job.outcome(node, teacher, job.by_size[0], "sft-lora", model)


def random_choice(
    job: Job, nodes: Sequence[NodeFacts], evals: Sequence[TeacherEval], rng: np.random.Generator, model: str
) -> Outcome:
    feasible = job.feasible(nodes)
    if not feasible:
        return Outcome(False, note="no feasible node")
    node = feasible[int(rng.integers(len(feasible)))]
    teachers = [t.name for t in job.spec.teachers]
    teacher = teachers[int(rng.integers(len(teachers)))]
    fitting = [s for s in job.by_size if job.fits(s, node)]
    student = fitting[int(rng.integers(len(fitting)))]
    return job.outcome(node, teacher, student, "sft-lora", model)


RUNNERS: dict[
    str, Callable[[Job, Sequence[NodeFacts], Sequence[TeacherEval], np.random.Generator, str], Outcome]
]
RUNNERS = {
    "Stratos": stratos,
    "accuracy-first": accuracy_first,
    "cost-first": cost_first,
    "random": random_choice,
}

# ---------------------------------------------------------------------------------------------- scores

FloatArray = npt.NDArray[np.float64]


def normalised(values: FloatArray, delivered: npt.NDArray[np.bool_], *, method: str) -> FloatArray:
    """values: seeds x strategies x metrics (accuracy higher is better, the rest lower).

    Strategies that delivered no model in a seed get 0 on every metric and take no part in that seed's
    normalisation."""
    out = np.zeros_like(values)
    for s in range(values.shape[0]):
        ok = delivered[s]
        if not ok.any():
            continue
        for m in range(values.shape[2]):
            col = values[s, ok, m]
            lo, hi = float(col.min()), float(col.max())
            if method == "minmax":
                if hi - lo <= 1e-12 * max(1.0, abs(hi)):
                    norm = np.ones_like(col)
                else:
                    norm = (col - lo) / (hi - lo) if m == 0 else (hi - col) / (hi - lo)
            else:  # ratio to the best
                norm = col / hi if m == 0 else np.divide(lo, col, out=np.ones_like(col), where=col > 0)
            out[s, ok, m] = norm
    return out


def scores(norm: FloatArray, weights: Sequence[float]) -> FloatArray:
    """Mean score per strategy (seeds x strategies x metrics @ weights, averaged over seeds)."""
    w = np.asarray(weights, dtype=float)
    return np.asarray((norm @ (w / w.sum())).mean(axis=0))


def improvement(mean_scores: Sequence[float]) -> float:
    """Relative improvement of Stratos (index 0) over the best baseline (NaN when that is 0)."""
    best = max(mean_scores[1:])
    return float((mean_scores[0] - best) / best) if best > 0 else float("nan")


def weight_grid(step: float = 0.1) -> list[tuple[float, float, float, float]]:
    k = round(1 / step)
    grid = []
    for a, b, c in itertools.product(range(k + 1), repeat=3):
        d = k - a - b - c
        if d >= 0:
            grid.append((a / k, b / k, c / k, d / k))
    return grid


def sensitivity(norm: FloatArray) -> dict[str, Any]:
    grid = weight_grid()
    gains = []
    best_count = 0
    for w in grid:
        s = scores(norm, w)
        gains.append(improvement(list(s)))
        best_count += int(np.argmax(s) == 0)
    named = {
        "equal (0.25 each)": (0.25, 0.25, 0.25, 0.25),
        "accuracy-heavy (0.7/0.1/0.1/0.1)": (0.7, 0.1, 0.1, 0.1),
        "cost-heavy (0.1/0.1/0.7/0.1)": (0.1, 0.1, 0.7, 0.1),
        "latency-heavy (0.1/0.7/0.1/0.1)": (0.1, 0.7, 0.1, 0.1),
        "time-heavy (0.1/0.1/0.1/0.7)": (0.1, 0.1, 0.1, 0.7),
        "no accuracy (0, then 1/3 each)": (0.0, 1 / 3, 1 / 3, 1 / 3),
    }
    g = np.array(gains)
    return {
        "weightVectors": len(grid),
        "stratosBestShare": round(best_count / len(grid), 3),
        "improvement": {
            "min": round(float(g.min()), 3),
            "median": round(float(np.median(g)), 3),
            "max": round(float(g.max()), 3),
            "shareAtLeast22pct": round(float(np.mean(g >= 0.22)), 3),
        },
        "named": {
            name: {
                "scores": dict(zip(STRATEGIES, np.round(scores(norm, w), 3).tolist(), strict=True)),
                "improvement": round(improvement(list(scores(norm, w))), 3),
            }
            for name, w in named.items()
        },
    }


# ------------------------------------------------------------------------------------------------- run


def run_config(
    config: Config, seeds: int, *, cluster: int = PAPER_CLUSTER_SIZE, seed0: int = 0
) -> dict[str, Any]:
    job = Job(config.spec)
    values = np.zeros((seeds, len(STRATEGIES), len(METRICS)))
    delivered = np.zeros((seeds, len(STRATEGIES)), dtype=bool)
    meets = np.zeros((seeds, len(STRATEGIES)), dtype=bool)
    picks: dict[str, Counter[str]] = {s: Counter() for s in STRATEGIES}
    notes: dict[str, Counter[str]] = {s: Counter() for s in STRATEGIES}
    for seed in range(seeds):
        rng = np.random.default_rng([seed0, seed])
        nodes = make_cloud(cluster, rng)
        evals = evaluate_teachers(job, rng)
        for k, name in enumerate(STRATEGIES):
            out = RUNNERS[name](
                job, nodes, evals, np.random.default_rng([seed0, seed, k]), config.accuracy_model
            )
            notes[name][out.note or "ok"] += 1
            if not out.delivered:
                continue
            assert out.node is not None
            delivered[seed, k] = True
            values[seed, k] = (out.accuracy, out.latency, out.cost, out.time)
            meets[seed, k] = out.accuracy >= job.min_accuracy and out.time <= job.max_hours
            picks[name][f"{out.student} | {out.teacher} | {out.node.gpu_count}x {out.node.gpu.name}"] += 1
    weights = [WEIGHTS[m] for m in METRICS]
    norm = normalised(values, delivered, method="minmax")
    ratio = normalised(values, delivered, method="ratio")
    mean_scores = scores(norm, weights)
    # The same scores over only the seeds in which Stratos delivered a model: the quality of its decisions
    # when it decides, apart from how often the probe filter leaves it without a student.
    stratos_ok = delivered[:, 0]
    when_delivered = scores(norm[stratos_ok], weights) if stratos_ok.any() else np.zeros(len(STRATEGIES))
    rows = {}
    for k, name in enumerate(STRATEGIES):
        ok = delivered[:, k]
        means = values[ok, k].mean(axis=0) if ok.any() else np.full(len(METRICS), np.nan)
        rows[name] = {
            "accuracy": float(means[0]),
            "latencyMs": float(means[1]),
            "costUsd": float(means[2]),
            "trainingHours": float(means[3]),
            "score": float(mean_scores[k]),
            "scoreWhenStratosDelivered": float(when_delivered[k]),
            "scoreStd": float((norm[:, k] @ (np.array(weights) / sum(weights))).std()),
            "delivered": float(ok.mean()),
            "meetsRequirements": float(meets[:, k].mean()),
            "topChoices": dict(picks[name].most_common(4)),
            "outcomes": dict(notes[name]),
        }
    return {
        "name": config.name,
        "description": config.description,
        "accuracyModel": config.accuracy_model,
        "requirements": config.spec.requirements.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "seeds": seeds,
        "rows": rows,
        "improvementOverBestBaseline": improvement(list(mean_scores)),
        "improvementWhenStratosDelivered": improvement(list(when_delivered)),
        "ratioNormalisation": {
            "scores": dict(zip(STRATEGIES, np.round(scores(ratio, weights), 4).tolist(), strict=True)),
            "improvement": improvement(list(scores(ratio, weights))),
        },
        "weightSensitivity": sensitivity(norm),
    }


def run(
    seeds: int = 200,
    *,
    cluster: int = PAPER_CLUSTER_SIZE,
    only: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    results = []
    for config in configs():
        if only and config.name not in only:
            continue
        if progress:
            progress(f"{config.name} ({seeds} seeds) ...")
        results.append(run_config(config, seeds, cluster=cluster))
    return {
        "benchmark": "decision_quality",
        "machine": machine(),
        "method": {
            "job": str(EXAMPLE.relative_to(REPO_ROOT)),
            "clusterNodes": cluster,
            "cloud": DISTRIBUTIONS,
            "teacherAccuracy": TEACHER_ACCURACY,
            "students": {k: vars(v) for k, v in STUDENTS.items()},
            "accuracyModel": "final = base + (distilled - base) x teacherAccuracy / 0.89 (Qwen-72B); "
            "'table' variant: x 1",
            "tokensPerSample": TOKENS_PER_SAMPLE,
            "weights": WEIGHTS,
            "normalisation": "per seed, min-max over the strategies that delivered (1 best, 0 worst); "
            "no model: score 0",
        },
        "paperTable4": {
            k: dict(zip(("accuracy", "latencyMs", "costUsd", "trainingHours", "score"), v, strict=True))
            for k, v in PAPER_TABLE4.items()
        },
        "configs": results,
    }


def render(report: Mapping[str, Any]) -> str:
    lines = []
    for cfg in report["configs"]:
        lines.append(f"== {cfg['name']}: {cfg['description']} ({cfg['seeds']} seeds)")
        rows = []
        for name, r in cfg["rows"].items():
            paper = PAPER_TABLE4[name]
            rows.append(
                [
                    name,
                    f"{r['accuracy'] * 100:.2f}%",
                    f"{r['latencyMs']:.2f}",
                    f"{r['costUsd']:.2f}",
                    f"{r['trainingHours']:.2f}",
                    f"{r['score']:.3f}",
                    f"{r['delivered'] * 100:.0f}%",
                    f"{r['meetsRequirements'] * 100:.0f}%",
                    f"{paper[0] * 100:.2f}% / {paper[1]} / {paper[2]} / {paper[3]} / {paper[4]}",
                ]
            )
        head = [
            "Strategy",
            "Acc.",
            "Latency ms",
            "Cost $",
            "Time h",
            "Score",
            "model",
            "meets A,T",
            "paper: Acc / Lat / Cost / Time / Score",
        ]
        lines.append(table(head, rows))
        sens = cfg["weightSensitivity"]
        lines.append(
            f"Stratos vs best baseline: {cfg['improvementOverBestBaseline'] * 100:+.1f}% "
            f"(in the seeds where Stratos delivered: {cfg['improvementWhenStratosDelivered'] * 100:+.1f}%; "
            f"ratio normalisation: {cfg['ratioNormalisation']['improvement'] * 100:+.1f}%); over "
            f"{sens['weightVectors']} weight vectors Stratos is best in "
            f"{sens['stratosBestShare'] * 100:.0f}%, "
            f"improvement median {sens['improvement']['median'] * 100:+.1f}% "
            f"[{sens['improvement']['min'] * 100:+.1f}%, {sens['improvement']['max'] * 100:+.1f}%], "
            f">= +22% in {sens['improvement']['shareAtLeast22pct'] * 100:.0f}%"
        )
        stratos_row = cfg["rows"]["Stratos"]
        lines.append(f"Stratos outcomes: {stratos_row['outcomes']}; top choices: {stratos_row['topChoices']}")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument(
        "--cluster", type=int, default=PAPER_CLUSTER_SIZE, help="nodes in the simulated cloud"
    )
    parser.add_argument("--only", nargs="*", help="configuration names to run")
    parser.add_argument("--quick", action="store_true", help="20 seeds")
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for the JSON (default benchmarks/results)"
    )
    args = parser.parse_args(argv)
    report = run(
        20 if args.quick else args.seeds,
        cluster=args.cluster,
        only=args.only,
        progress=lambda m: print(m, flush=True),
    )
    print(render(report))
    print(f"wrote {write_json('decision_quality', report, out_dir=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
