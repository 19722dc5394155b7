"""Decision quality: Stratos against accuracy-first, cost-first and random, with intervals (paper Table 4).

The paper compares four "strategy selection methods" on accuracy, latency, cost and training time and a
weighted overall score (Table 4: Stratos 0.55, accuracy-first 0.25, cost-first 0.37, random 0.34, "at least
22%" better) without saying how the metrics are normalised. This script rebuilds the experiment from stated
assumptions and the project's real decision code, and reports what it gets, with paired bootstrap intervals.

The job. ``examples/gsm8k-alignment.yaml``: the paper's in-domain experiment (GSM8K; teachers GPT-4o,
Qwen-72B, Llama-3.1-405B; students Llama-3.2-1B, Qwen-2.5-1.5B, Llama-3.2-3B, Llama-3.1-8B; 10,000 samples,
2 epochs, LoRA SFT; sampleSize 200; A = minAccuracy 0.65 checked after training; probeMargin 0.10;
minTokensPerSecond 30; maxTrainingTime 4h; maxHourlyCost 3.0; maxLatencyMs 100; budget 100 USD; cost window
0.2; weights accuracy 0.4, latency 0.2, cost 0.2, training time 0.2, throughput 0). The job's weights are the
benchmark's scoring weights: the user says what they care about, and every strategy is scored by it.

The cloud (per seed). 3,732 nodes from ``benchmarks.cloud.make_cloud``.

Teachers. Assumed true GSM8K accuracies, rounded from public reports: GPT-4o 0.92, Qwen-72B 0.89,
Llama-3.1-405B 0.96; prices (USD per 1M tokens) from the example: 10, 1.2, 3.5; 1,000 tokens per answer
(prompt and completion). An evaluation observes Binomial(sampleSize, accuracy) / sampleSize and reports its
tokens. Synthesis keeps verified answers only (rejection sampling): targetSamples x 1,000 tokens / true
accuracy x price.

Students (paper Tables 1 and 2). Probe accuracy with the teacher's reasoning in the prompt (Table 1, "With 8B
CoT"): 1B 44.20%, 1.5B 57.32%, 3B 59.67%, 8B 61.49%; a probe observes Binomial(sampleSize, p) / sampleSize.
Accuracy after distillation (Table 2, GSM8K): without distillation 40.79 / 55.34 / 30.02 / 61.49%, after LoRA
SFT 35.48 / 64.67 / 71.95 / 78.77%, after GRPO 45.79 / 61.39 / 65.81 / 61.94%, with Qwen-72B as teacher.

Accuracy model. final = base + (distilled - base) x (teacher accuracy / 0.89): the gain scales with the
teacher's true accuracy relative to Qwen-72B's (this rewards accurate teachers, i.e. favours accuracy-first).
Variant ``table``: the gain does not depend on the teacher. Stress case ``grpo``: the job asks for GRPO, whose
Table 2 row inverts the probe's order at the top (the 8B gains nothing, the 3B is best), so the probe
misleads.

Strategies (all see the same cloud, the same teacher evaluations and the job's hard node constraints:
per-GPU memory for the smallest student, maxHourlyCost, maxLatencyMs; all train with the algorithm the job
asks for):

- Stratos: the project's functions, as the operator calls them (``servers.rule: joint``): ``select_server``
  (its shortlist of undominated feasible nodes), ``select_teacher(by="expected")``, ``select_strategy``,
  ``probe_plan`` and one probe per student, ``select_pair`` with the job's weights. When the trained
  student misses A on held-out data, the next in the fallback order is trained on the same node (its
  time and cost add up), as the operator does.
- Stratos (paper rule): the same with ``servers.rule: paper`` (the grid's node, list-price teacher, the
  paper's Eq. 2 with probe filter A): the project's faithful implementation of the paper.
- accuracy-first (paper): the most accurate teacher (by its evaluation), the feasible node with the most
  compute (GPUs x BF16 TFLOPS; ties: cheaper), the largest student that fits it.
- cost-first (paper): the cheapest feasible node, the cheapest teacher by list price, the smallest student.
- random (paper): a feasible node, a teacher and a student that fits the node, uniformly at random.
- cost-first (fair): the cheapest teacher whose evaluation meets A, then the cheapest (node, student)
  pair by expected cost among those that fit and meet T, R and the budget; ties: the larger student.
- random (fair): uniformly over the (node, student) pairs that fit and meet T, R and the budget, with a
  teacher whose evaluation meets A.

Metrics per run: accuracy (the accuracy model, for the delivered student, algorithm and teacher); latency
(the node's, ms); training time (hours, all attempts); cost (USD) = node hourly cost x (training +
held-out evaluation + serving.expectedHours + probes on that node) + synthesis tokens + teacher evaluations
(paid by the strategies that evaluate teachers) + probes elsewhere.

Scores.
- Utility (headline): per seed, each metric is normalised over that seed's whole configuration space (every
  feasible node x fitting student x teacher; 1 = best value in the space, 0 = worst, clipped), and the
  utility is the weighted sum; a strategy with no model scores 0. Lenient: every delivered model counts.
  Strict: a delivered model that violates A (true accuracy), T, R or the budget counts as none.
- Oracle: the best utility in the seed's configuration space among the configurations that meet A, T, R and
  the budget, knowing the true accuracies; "of oracle" = mean utility / mean oracle utility, regret =
  oracle - utility per seed.
- Relative (the paper's Table 4 method, for comparison): min-max over the strategies that delivered.
- Intervals: paired bootstrap over seeds (2,000 resamples, percentile 95%); the best baseline is fixed by
  its point estimate. Win rates: share of seeds where Stratos is better than the baseline on a metric (ties
  count half), over the seeds where both delivered.
- Weight grid: every weight vector on a 0.1 grid of the 4-simplex (286); Stratos gets each vector as its
  job weights (throughput 0) and is scored by it; the paper rule's Eq. 2 gets (accuracy, training time) of
  the vector, or its defaults when both are 0.

Run: ``.venv/bin/python -m benchmarks.decision_quality`` (``--seeds N``; ``--quick``; ``--only NAME``).
Prints the tables and writes benchmarks/results/decision_quality.json; it refuses to write there from a
tree with uncommitted changes to operator/ or benchmarks/ (pass ``--out DIR`` for a scratch run).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
from stratos.decide.joint import JointStudent, JointWeights, probe_hours, probe_plan, select_pair
from stratos.decide.models import ModelFacts
from stratos.decide.nodes import NodeFacts
from stratos.decide.placement import (
    EVALUATION_TOKENS_PER_SAMPLE,
    PROBE_TOKENS_PER_SAMPLE,
    joint_costs,
    joint_limits,
    joint_student,
    probes_usd,
    required_gpu_memory_gib,
    student_fit,
)
from stratos.decide.servers import select_server
from stratos.decide.strategy import select_strategy
from stratos.decide.students import ScoreWeights, assess_student, select_student, students_to_probe
from stratos.decide.teachers import TeacherEval, select_teacher

EXAMPLE = REPO_ROOT / "examples" / "gsm8k-alignment.yaml"
#: The files whose change invalidates the committed results (a test checks none changed since).
MEASURED_CODE = (
    "benchmarks/decision_quality.py",
    "benchmarks/cloud.py",
    "examples/gsm8k-alignment.yaml",
    "operator/stratos/decide/joint.py",
    "operator/stratos/decide/servers.py",
    "operator/stratos/decide/students.py",
    "operator/stratos/decide/teachers.py",
    "operator/stratos/decide/strategy.py",
    "operator/stratos/decide/placement.py",
    "operator/stratos/decide/estimate.py",
)
STRATEGIES = (
    "Stratos",
    "Stratos (paper rule)",
    "accuracy-first",
    "cost-first",
    "random",
    "cost-first (fair)",
    "random (fair)",
)
BASELINES = STRATEGIES[2:]
METRICS = ("accuracy", "latency", "cost", "time")
CONSTRAINTS = ("A", "T", "R", "budget")
TOKENS_PER_ANSWER = 1000
BOOTSTRAP = 2000

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

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Outcome:
    """What one strategy delivered in one seed (``delivered`` False: no model)."""

    delivered: bool
    node: NodeFacts | None = None
    teacher: str | None = None
    student: str | None = None
    accuracy: float = 0.0
    latency: float = 0.0
    cost: float = 0.0
    time: float = 0.0
    meets: tuple[bool, bool, bool, bool] = (False, False, False, False)  # A, T, R, budget
    note: str = ""

    def metrics(self) -> tuple[float, float, float, float]:
        return (self.accuracy, self.latency, self.cost, self.time)


@dataclass(frozen=True)
class Config:
    """One configuration of the experiment."""

    name: str
    spec: DistillationJobSpec
    accuracy_model: str = "scaled"  # or "table"
    description: str = ""
    grid: bool = False  # run the full weight grid


def example_spec(
    *,
    sample_size: int | None = None,
    serving: Mapping[str, Any] | None = None,
    distillation: Mapping[str, Any] | None = None,
    **requirements: Any,
) -> dict[str, Any]:
    """The example's spec as a dict, ``requirements`` keys overridden (None deletes a key)."""
    spec: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text())["spec"])
    for key, value in requirements.items():
        if value is None:
            spec["requirements"].pop(key, None)
        else:
            spec["requirements"][key] = value
    if sample_size is not None:
        spec["task"]["sampleSize"] = sample_size
    spec["serving"].update(serving or {})
    spec["distillation"].update(distillation or {})
    return spec


def configs() -> list[Config]:
    v = DistillationJobSpec.model_validate
    name = EXAMPLE.name
    return [
        Config("headline", v(example_spec()), description=f"{name} as shipped (A 0.65)", grid=True),
        Config("threshold-0.58", v(example_spec(minAccuracy=0.58)), description="headline, minAccuracy 0.58"),
        Config(
            "hosting-100h",
            v(example_spec(serving={"expectedHours": 100}, budget=None)),
            description="headline, serving.expectedHours 100, no budget",
        ),
        Config(
            "hosting-720h",
            v(example_spec(serving={"expectedHours": 720}, budget=None)),
            description="headline, serving.expectedHours 720 (a month), no budget",
        ),
        Config(
            "grpo-stress",
            v(example_spec(distillation={"algorithm": "grpo"})),
            description="headline with GRPO: Table 2's GRPO row inverts the probe's order at the top",
        ),
        Config(
            "teacher-independent",
            v(example_spec()),
            "table",
            description="headline; the distillation gain does not depend on the teacher",
        ),
        Config(
            "probe-1000-samples",
            v(example_spec(sample_size=1000)),
            description="headline, sampleSize 1000 (less probe noise)",
        ),
        Config(
            "no-node-caps",
            v(example_spec(maxHourlyCost=None, maxLatencyMs=None)),
            description="headline without maxHourlyCost and maxLatencyMs",
        ),
    ]


# ----------------------------------------------------------------------------------------- the models


def final_accuracy(student: str, teacher: str, algorithm: str, model: str) -> float:
    s = STUDENTS[student]
    distilled = s.grpo if algorithm == "grpo" else s.sft
    factor = 1.0 if model == "table" else TEACHER_ACCURACY[teacher] / TEACHER_ACCURACY[REFERENCE_TEACHER]
    return float(min(1.0, max(0.0, s.base + (distilled - s.base) * factor)))


class Job:
    """The job's fixed facts: student shapes, training tokens, the memory floor, prices, limits."""

    def __init__(self, spec: DistillationJobSpec, model: str) -> None:
        self.spec = spec
        self.model = model
        self.facts = {s.name: ModelFacts.from_spec(s.model) for s in spec.students}
        self.names = [s.name for s in spec.students]
        self.by_size = sorted(self.facts, key=lambda n: self.facts[n].parameters)
        dist = spec.distillation
        self.tokens = tokens_for(dist.target_samples, dist.epochs, dist.sequence_length)
        self.min_memory = required_gpu_memory_gib(spec)
        self.price = {t.name: t.cost_per_million_tokens for t in spec.teachers}
        self.teachers = [t.name for t in spec.teachers]
        self.sample_size = spec.task.sample_size
        req = spec.requirements
        self.min_accuracy = req.min_accuracy
        self.max_hours = req.max_training_seconds / 3600
        self.min_tps = req.min_tokens_per_second
        self.budget = req.budget
        self.hosting = spec.serving.expected_hours
        self.algorithm = "grpo" if dist.algorithm == "grpo" else "sft-lora"
        self.plain = [joint_student(spec, n) for n in self.names]

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

    def tps(self, student: str, node: NodeFacts) -> float:
        return decode_tokens_per_second(self.facts[student], node.gpu)

    def evaluation_hours(self, student: str, node: NodeFacts) -> float:
        return self.sample_size * EVALUATION_TOKENS_PER_SAMPLE / self.tps(student, node) / 3600

    def synthesis_usd(self, teacher: str) -> float:
        """True synthesis cost: verified answers only, so tokens / true yield."""
        per = TOKENS_PER_ANSWER * self.price[teacher] / 1e6 / TEACHER_ACCURACY[teacher]
        return self.spec.distillation.target_samples * per

    def evaluation_usd(self) -> float:
        return sum(self.sample_size * TOKENS_PER_ANSWER * p / 1e6 for p in self.price.values())

    def outcome(
        self,
        node: NodeFacts,
        teacher: str,
        attempts: Sequence[str],
        *,
        extra_usd: float = 0.0,
        note: str = "",
    ) -> Outcome:
        """Train ``attempts`` in order on ``node`` until one meets A (the operator's fallback)."""
        cost = extra_usd + self.synthesis_usd(teacher) + node.hourly_cost * self.hosting
        time = 0.0
        student, accuracy = attempts[0], 0.0
        for student in attempts:
            t = self.hours(student, node)
            time += t
            cost += node.hourly_cost * (t + self.evaluation_hours(student, node))
            accuracy = final_accuracy(student, teacher, self.algorithm, self.model)
            if accuracy >= self.min_accuracy - 1e-9:
                break
        meets = (
            accuracy >= self.min_accuracy - 1e-9,
            self.hours(student, node) <= self.max_hours + 1e-9,
            self.tps(student, node) >= self.min_tps - 1e-9,
            self.budget is None or cost <= self.budget + 1e-9,
        )
        return Outcome(True, node, teacher, student, accuracy, node.latency_ms, cost, time, meets, note)


def evaluate_teachers(job: Job, rng: np.random.Generator) -> list[TeacherEval]:
    evals = []
    for t in job.spec.teachers:
        correct = int(rng.binomial(job.sample_size, TEACHER_ACCURACY[t.name]))
        tokens = job.sample_size * TOKENS_PER_ANSWER
        evals.append(
            TeacherEval(
                name=t.name,
                accuracy=correct / job.sample_size,
                samples=job.sample_size,
                correct=correct,
                prompt_tokens=tokens // 2,
                completion_tokens=tokens - tokens // 2,
                cost_usd=tokens * t.cost_per_million_tokens / 1e6,
                cost_per_million_tokens=t.cost_per_million_tokens,
            )
        )
    return evals


# ------------------------------------------------------------------------------------------ strategies


@dataclass
class World:
    """One seed: the cloud, the teacher evaluations, the probes, and what every strategy needs."""

    nodes: list[NodeFacts]
    feasible: list[NodeFacts]
    evals: list[TeacherEval]
    probes: dict[str, float]  # student -> observed probe accuracy (each probed once; see ``probe_noise``)
    rng_seed: Sequence[int]
    cache: dict[str, Any] = field(default_factory=dict)


def stratos_prepare(job: Job, world: World) -> dict[str, Any] | None:
    """The weight-independent part of the joint rule (server grid, teacher, probes, cost model)."""
    if "joint" in world.cache:
        return world.cache["joint"]  # type: ignore[no-any-return]
    spec, req = job.spec, job.spec.requirements
    server = select_server(
        world.nodes,
        cost_window=spec.servers.cost_window,
        min_gpu_memory_gib=job.min_memory,
        max_hourly_cost=req.max_hourly_cost,
        max_latency_ms=req.max_latency_ms,
    )
    world.cache["server"] = server
    prepared: dict[str, Any] | None = None
    if server.chosen is not None:
        teacher = select_teacher(world.evals, min_accuracy=req.min_accuracy, by="expected")
        assert teacher.selected is not None
        front = list(server.front)
        plan = probe_plan(job.plain, front)
        students = [
            JointStudent(s.name, s.parameters, s.memory_gib, s.training_flops, world.probes[s.name])
            if plan[s.name] is not None
            else s
            for s in job.plain
        ]
        win = next(e for e in world.evals if e.name == teacher.selected)
        probes = probes_usd(spec, students, plan)
        costs = joint_costs(
            spec,
            synthesis_usd=win.synthesis_usd(spec.distillation.target_samples),
            teacher_evaluation_usd=sum(e.cost_usd for e in world.evals),
            probes=probes,
        )
        prepared = {
            "front": front,
            "teacher": teacher.selected,
            "students": students,
            "costs": costs,
            "extra": sum(e.cost_usd for e in world.evals) + probes,
        }
    world.cache["joint"] = prepared
    return prepared


def _server(job: Job, world: World) -> Any:
    if "server" not in world.cache:
        stratos_prepare(job, world)
    return world.cache["server"]


def stratos(job: Job, world: World, weights: Sequence[float] | None = None) -> Outcome:
    """Stratos with servers.rule joint; ``weights`` (accuracy, latency, cost, time) overrides the job's."""
    prep = stratos_prepare(job, world)
    if prep is None:
        return Outcome(False, note="no feasible node")
    w = job.spec.requirements.weights
    if weights is None:
        jw = JointWeights(w.accuracy, w.latency, w.cost, w.training_time, w.throughput)
    else:
        jw = JointWeights(weights[0], weights[1], weights[2], weights[3], 0.0)
    choice = select_pair(
        prep["students"],
        prep["front"],
        weights=jw,
        costs=prep["costs"],
        limits=joint_limits(job.spec),
        probe_margin=job.spec.requirements.probe_margin,
    )
    if choice.chosen is None:
        return Outcome(False, note="no feasible pair")
    return job.outcome(
        choice.chosen.node, prep["teacher"], choice.ranking, extra_usd=prep["extra"], note="ok"
    )


def stratos_paper(job: Job, world: World, weights: Sequence[float] | None = None) -> Outcome:
    """The paper's greedy rule, as the project implements it (servers.rule paper)."""
    spec, req = job.spec, job.spec.requirements
    node = _server(job, world).chosen
    if node is None:
        return Outcome(False, note="no feasible node")
    teacher = select_teacher(world.evals, min_accuracy=req.min_accuracy)
    assert teacher.selected is not None
    select_strategy(
        teacher.accuracy,
        min_accuracy=req.min_accuracy,
        requested_strategy=spec.distillation.strategy,
        requested_algorithm=spec.distillation.algorithm,
    )
    fits = {s: student_fit(spec, job.facts[s], node.gpu_memory_gib) for s in job.names}
    probed = students_to_probe(fits)
    probe_usd = 0.0
    assessments = []
    for name in job.names:
        accuracy = world.probes[name] if name in probed else None
        if name in probed:
            probe_usd += node.hourly_cost * probe_hours(
                job.plain[job.names.index(name)], node, job.sample_size * PROBE_TOKENS_PER_SAMPLE
            )
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
    if weights is None:
        eq2: Any = req.weights
    elif weights[0] + weights[3] > 0:
        eq2 = ScoreWeights(accuracy=weights[0], training_time=weights[3], throughput=0.0)
    else:
        eq2 = ScoreWeights()
    student = select_student(
        assessments,
        min_accuracy=req.min_accuracy,
        max_training_hours=job.max_hours,
        min_tokens_per_second=req.min_tokens_per_second,
        weights=eq2,
    )
    if student.selected is None:
        return Outcome(False, note="no student passed the probe filter")
    extra = job.evaluation_usd() + probe_usd
    return job.outcome(node, teacher.selected, student.ranking, extra_usd=extra, note="ok")


def accuracy_first(job: Job, world: World) -> Outcome:
    if not world.feasible:
        return Outcome(False, note="no feasible node")
    teacher = max(world.evals, key=lambda e: (e.accuracy, -e.cost_per_million_tokens, e.name)).name
    node = min(world.feasible, key=lambda f: (-f.hardware, f.hourly_cost, f.name))
    fitting = [s for s in job.by_size if job.fits(s, node)]
    if not fitting:
        return Outcome(False, note="no student fits")
    return job.outcome(node, teacher, [fitting[-1]], extra_usd=job.evaluation_usd(), note="ok")


def cost_first(job: Job, world: World) -> Outcome:
    if not world.feasible:
        return Outcome(False, note="no feasible node")
    node = min(world.feasible, key=lambda f: (f.hourly_cost, f.name))
    teacher = min(job.spec.teachers, key=lambda t: (t.cost_per_million_tokens, t.name)).name
    fitting = [s for s in job.by_size if job.fits(s, node)]
    return job.outcome(node, teacher, [fitting[0]], note="ok")


def random_choice(job: Job, world: World) -> Outcome:
    if not world.feasible:
        return Outcome(False, note="no feasible node")
    rng = np.random.default_rng([*world.rng_seed, 101])
    node = world.feasible[int(rng.integers(len(world.feasible)))]
    teachers = [t.name for t in job.spec.teachers]
    teacher = teachers[int(rng.integers(len(teachers)))]
    fitting = [s for s in job.by_size if job.fits(s, node)]
    return job.outcome(node, teacher, [fitting[int(rng.integers(len(fitting)))]], note="ok")


def _fair_teachers(job: Job, world: World) -> list[str]:
    """Teachers whose evaluation meets A (all of them when none does)."""
    ok = [e for e in world.evals if e.accuracy >= job.min_accuracy - 1e-9] or list(world.evals)
    return [e.name for e in ok]


def _fair_rows(job: Job, world: World, teachers: Sequence[str]) -> npt.NDArray[np.int64]:
    """Rows of the configuration space with one of ``teachers`` that fit and meet T, R and the budget
    (the budget counting the teacher evaluations the fair baselines pay)."""
    space = cached_space(job, world)
    wanted = np.isin(space.teacher, [job.teachers.index(t) for t in teachers])
    ok = space.meets_t & space.meets_r & wanted
    if job.budget is not None:
        ok &= space.metrics[:, 2] + job.evaluation_usd() <= job.budget + 1e-9
    return np.flatnonzero(ok)


def _outcome_of_row(job: Job, world: World, row: int) -> Outcome:
    space = cached_space(job, world)
    node = world.feasible[int(space.node[row])]
    teacher = job.teachers[int(space.teacher[row])]
    student = job.names[int(space.student[row])]
    return job.outcome(node, teacher, [student], extra_usd=job.evaluation_usd(), note="ok")


def cost_first_fair(job: Job, world: World) -> Outcome:
    teachers = _fair_teachers(job, world)
    cheapest = min(teachers, key=lambda n: (job.price[n], n))
    rows = _fair_rows(job, world, [cheapest])
    if not rows.size:
        return Outcome(False, note="no pair meets T, R and the budget")
    space = cached_space(job, world)
    params = np.array([job.facts[job.names[int(k)]].parameters for k in space.student[rows]])
    order = np.lexsort((space.node[rows], -params, space.metrics[rows, 2]))
    return _outcome_of_row(job, world, int(rows[order[0]]))


def random_fair(job: Job, world: World) -> Outcome:
    rows = _fair_rows(job, world, _fair_teachers(job, world))
    if not rows.size:
        return Outcome(False, note="no combination meets T, R and the budget")
    rng = np.random.default_rng([*world.rng_seed, 202])
    return _outcome_of_row(job, world, int(rows[int(rng.integers(rows.size))]))


RUNNERS: dict[str, Callable[[Job, World], Outcome]] = {
    "Stratos": stratos,
    "Stratos (paper rule)": stratos_paper,
    "accuracy-first": accuracy_first,
    "cost-first": cost_first,
    "random": random_choice,
    "cost-first (fair)": cost_first_fair,
    "random (fair)": random_fair,
}

# ------------------------------------------------------------------------------------ the config space


@dataclass
class Space:
    """Every configuration of a seed (feasible node x fitting student x teacher): metrics and constraints."""

    metrics: FloatArray  # configurations x METRICS
    meets: BoolArray  # configurations: A, T, R and budget all met (true accuracies)
    lo: FloatArray
    hi: FloatArray
    node: npt.NDArray[np.int64]  # index into World.feasible
    student: npt.NDArray[np.int64]  # index into Job.names
    teacher: npt.NDArray[np.int64]  # index into Job.teachers
    meets_t: BoolArray
    meets_r: BoolArray

    def normalise(self, values: FloatArray) -> FloatArray:
        """1 = best in the space, 0 = worst, clipped; accuracy higher is better, the rest lower."""
        span = np.where(self.hi - self.lo > 0, self.hi - self.lo, 1.0)
        norm = (self.hi - values) / span
        norm[..., 0] = (values[..., 0] - self.lo[0]) / span[0]
        return np.asarray(np.clip(norm, 0.0, 1.0), dtype=np.float64)


def config_space(job: Job, world: World) -> Space:
    price = np.array([n.hourly_cost for n in world.feasible])
    latency = np.array([n.latency_ms for n in world.feasible])
    memory = np.array([n.gpu_memory_gib for n in world.feasible])
    hardware = np.array([n.hardware for n in world.feasible])
    bandwidth = np.array([n.gpu.memory_bandwidth_gbps for n in world.feasible])
    cols: dict[str, list[Any]] = {k: [] for k in ("m", "ok", "node", "student", "teacher", "t", "r")}
    for k, s in enumerate(job.plain):
        idx = np.flatnonzero(memory >= s.memory_gib - 1e-9)
        t = s.training_flops / (hardware[idx] * 1e12 * job.spec.distillation.mfu) / 3600
        r = bandwidth[idx] * 1e9 * 0.6 / (2 * s.parameters)
        ev = job.sample_size * EVALUATION_TOKENS_PER_SAMPLE / r / 3600
        ok_t, ok_r = t <= job.max_hours + 1e-9, r >= job.min_tps - 1e-9
        for j, teacher in enumerate(job.teachers):
            acc = final_accuracy(s.name, teacher, job.algorithm, job.model)
            cost = price[idx] * (t + ev + job.hosting) + job.synthesis_usd(teacher)
            cols["m"].append(np.stack([np.full(t.size, acc), latency[idx], cost, t], axis=1))
            meets = (acc >= job.min_accuracy - 1e-9) & ok_t & ok_r
            if job.budget is not None:
                meets &= cost <= job.budget + 1e-9
            cols["ok"].append(meets)
            cols["node"].append(idx)
            cols["student"].append(np.full(idx.size, k))
            cols["teacher"].append(np.full(idx.size, j))
            cols["t"].append(ok_t)
            cols["r"].append(ok_r)
    cat = {k: np.concatenate(v) for k, v in cols.items()}
    metrics = cat["m"] if cat["m"].size else np.zeros((0, 4))
    lo = metrics.min(axis=0) if metrics.size else np.zeros(4)
    hi = metrics.max(axis=0) if metrics.size else np.ones(4)
    return Space(
        metrics,
        cat["ok"].astype(bool),
        lo,
        hi,
        cat["node"].astype(np.int64),
        cat["student"].astype(np.int64),
        cat["teacher"].astype(np.int64),
        cat["t"].astype(bool),
        cat["r"].astype(bool),
    )


def cached_space(job: Job, world: World) -> Space:
    if "space" not in world.cache:
        world.cache["space"] = config_space(job, world)
    space: Space = world.cache["space"]
    return space


# ---------------------------------------------------------------------------------------------- scores


def normalised(values: FloatArray, delivered: BoolArray, *, method: str) -> FloatArray:
    """The paper's relative scoring: per seed, min-max over the strategies that delivered (1 best).

    values: seeds x strategies x metrics (accuracy higher is better, the rest lower). Strategies that
    delivered no model in a seed get 0 on every metric and take no part in that seed's normalisation."""
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


def weight_grid(step: float = 0.1) -> list[tuple[float, float, float, float]]:
    k = round(1 / step)
    grid = []
    for a, b, c in itertools.product(range(k + 1), repeat=3):
        d = k - a - b - c
        if d >= 0:
            grid.append((a / k, b / k, c / k, d / k))
    return grid


def improvement(stratos_mean: float, baseline_mean: float) -> float:
    return (stratos_mean - baseline_mean) / baseline_mean if baseline_mean > 0 else float("nan")


def bootstrap(
    utility: FloatArray, oracle: FloatArray | None, rng: np.random.Generator, *, resamples: int = BOOTSTRAP
) -> dict[str, Any]:
    """Paired bootstrap over seeds: means, improvements over each baseline, share of the oracle."""
    seeds = utility.shape[0]
    idx = rng.integers(0, seeds, size=(resamples, seeds))
    means = utility[idx].mean(axis=1)  # resamples x strategies
    point = utility.mean(axis=0)

    def ci(x: FloatArray) -> list[float]:
        x = x[np.isfinite(x)]
        if not x.size:
            return [float("nan"), float("nan")]
        lo, hi = np.percentile(x, [2.5, 97.5])
        return [round(float(lo), 4), round(float(hi), 4)]

    k0 = 0
    per_baseline = {}
    for name in BASELINES:
        k = STRATEGIES.index(name)
        with np.errstate(divide="ignore", invalid="ignore"):
            gains = (means[:, k0] - means[:, k]) / means[:, k]
        per_baseline[name] = {
            "improvement": round(improvement(float(point[k0]), float(point[k])), 4),
            "ci95": ci(gains),
        }
    best = max(BASELINES, key=lambda n: float(point[STRATEGIES.index(n)]))
    out: dict[str, Any] = {
        "mean": {
            name: {"value": round(float(point[k]), 4), "ci95": ci(means[:, k])}
            for k, name in enumerate(STRATEGIES)
        },
        "bestBaseline": best,
        "improvementOverBestBaseline": per_baseline[best],
        "improvementOverEachBaseline": per_baseline,
    }
    if oracle is None:
        return out
    oracle_means = oracle[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        of_oracle = means[:, k0] / oracle_means
    return out | {
        "oracle": {"value": round(float(oracle.mean()), 4), "ci95": ci(oracle_means)},
        "ofOracle": {"value": round(float(point[k0] / oracle.mean()), 4), "ci95": ci(of_oracle)},
        "regret": {
            name: {"value": round(float((oracle - utility[:, k]).mean()), 4)}
            for k, name in enumerate(STRATEGIES)
        },
    }


def win_rates(values: FloatArray, delivered: BoolArray) -> dict[str, dict[str, float | None]]:
    """Per baseline and metric: share of seeds (both delivered) where Stratos is better; ties count half."""
    out: dict[str, dict[str, float | None]] = {}
    for name in BASELINES:
        k = STRATEGIES.index(name)
        both = delivered[:, 0] & delivered[:, k]
        row: dict[str, float | None] = {}
        for m, metric in enumerate(METRICS):
            a, b = values[both, 0, m], values[both, k, m]
            better = a > b if m == 0 else a < b
            tie = np.isclose(a, b)
            row[metric] = round(float((better & ~tie).mean() + 0.5 * tie.mean()), 3) if both.any() else None
        out[name] = row
    return out


# ------------------------------------------------------------------------------------------------- run


def make_world(job: Job, seed: int, seed0: int, cluster: int) -> World:
    rng = np.random.default_rng([seed0, seed])
    nodes = make_cloud(cluster, rng)
    evals = evaluate_teachers(job, rng)
    probes = {n: int(rng.binomial(job.sample_size, STUDENTS[n].probe)) / job.sample_size for n in job.names}
    return World(nodes, job.feasible(nodes), evals, probes, (seed0, seed))


def run_config(
    config: Config, seeds: int, *, cluster: int = PAPER_CLUSTER_SIZE, seed0: int = 0, grid: bool | None = None
) -> dict[str, Any]:
    job = Job(config.spec, config.accuracy_model)
    w = config.spec.requirements.weights
    headline_w = np.array([w.accuracy, w.latency, w.cost, w.training_time], float)
    headline_w = headline_w / headline_w.sum()
    use_grid = config.grid if grid is None else grid
    vectors = weight_grid() if use_grid else []
    n_s, n_m = len(STRATEGIES), len(METRICS)
    values = np.zeros((seeds, n_s, n_m))
    delivered = np.zeros((seeds, n_s), dtype=bool)
    meets = np.zeros((seeds, n_s, len(CONSTRAINTS)), dtype=bool)
    norm = np.zeros((seeds, n_s, n_m))
    oracle = np.zeros(seeds)
    oracle_lenient = np.zeros(seeds)
    grid_u = np.zeros((seeds, len(vectors), n_s))  # lenient utility per weight vector
    grid_oracle = np.zeros((seeds, len(vectors)))
    grid_vals = np.zeros((seeds, len(vectors), 2, n_m))  # Stratos (both rules) per weight vector
    grid_del = np.zeros((seeds, len(vectors), 2), dtype=bool)
    grid_meets = np.zeros((seeds, len(vectors), n_s), dtype=bool)  # A, T, R and budget all met
    picks: dict[str, Counter[str]] = {s: Counter() for s in STRATEGIES}
    notes: dict[str, Counter[str]] = {s: Counter() for s in STRATEGIES}
    for seed in range(seeds):
        world = make_world(job, seed, seed0, cluster)
        space = cached_space(job, world)
        outs = [RUNNERS[name](job, world) for name in STRATEGIES]
        for k, out in enumerate(outs):
            notes[STRATEGIES[k]][out.note or "ok"] += 1
            if out.delivered:
                assert out.node is not None
                delivered[seed, k] = True
                values[seed, k] = out.metrics()
                meets[seed, k] = out.meets
                picks[STRATEGIES[k]][
                    f"{out.student} | {out.teacher} | {out.node.gpu_count}x {out.node.gpu.name}"
                ] += 1
        if space.metrics.size:
            norm[seed] = space.normalise(values[seed])
            space_norm = space.normalise(space.metrics)
            u_space = space_norm @ headline_w
            oracle[seed] = float(u_space[space.meets].max()) if space.meets.any() else 0.0
            oracle_lenient[seed] = float(u_space.max())
            if vectors:
                wmat = np.array(vectors).T  # metrics x vectors
                us = space_norm @ wmat
                grid_oracle[seed] = np.where(space.meets[:, None], us, -np.inf).max(axis=0).clip(min=0)
                base = norm[seed] @ wmat  # strategies x vectors
                base[~delivered[seed]] = 0.0
                grid_u[seed] = base.T
                grid_meets[seed] = (delivered[seed] & meets[seed].all(axis=1))[None, :]
                for v, vec in enumerate(vectors):  # Stratos (both rules) decide with these weights
                    for k, runner in ((0, stratos), (1, stratos_paper)):
                        out = runner(job, world, vec)
                        grid_vals[seed, v, k] = out.metrics()
                        grid_del[seed, v, k] = out.delivered
                        grid_meets[seed, v, k] = out.delivered and all(out.meets)
                        grid_u[seed, v, k] = (
                            float(space.normalise(np.array(out.metrics())) @ wmat[:, v])
                            if out.delivered
                            else 0.0
                        )

    lenient = np.where(delivered, norm @ headline_w, 0.0)
    strict_ok = delivered & meets.all(axis=2)
    strict = np.where(strict_ok, norm @ headline_w, 0.0)
    brng = np.random.default_rng([seed0, 99])
    relative = normalised(values, delivered, method="minmax")
    rel_scores = np.where(delivered, relative @ headline_w, 0.0)
    rows = {}
    for k, name in enumerate(STRATEGIES):
        ok = delivered[:, k]
        means = values[ok, k].mean(axis=0) if ok.any() else np.full(n_m, np.nan)
        rows[name] = {
            "accuracy": float(means[0]),
            "latencyMs": float(means[1]),
            "costUsd": float(means[2]),
            "trainingHours": float(means[3]),
            "utility": float(lenient[:, k].mean()),
            "utilityStrict": float(strict[:, k].mean()),
            "relativeScore": float(rel_scores[:, k].mean()),
            "delivered": float(ok.mean()),
            "deliveredStrict": float(strict_ok[:, k].mean()),
            "meets": {
                c: float(meets[ok, k, i].mean()) if ok.any() else None for i, c in enumerate(CONSTRAINTS)
            },
            "topChoices": dict(picks[name].most_common(3)),
            "outcomes": dict(notes[name]),
        }
    result: dict[str, Any] = {
        "name": config.name,
        "description": config.description,
        "accuracyModel": config.accuracy_model,
        "algorithm": job.algorithm,
        "requirements": config.spec.requirements.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "expectedHours": job.hosting,
        "seeds": seeds,
        "weights": dict(zip(METRICS, np.round(headline_w, 4).tolist(), strict=True)),
        "rows": rows,
        "lenient": bootstrap(lenient, oracle_lenient, brng),
        "strict": bootstrap(strict, oracle, brng),
        "relative": bootstrap(rel_scores, None, brng),
        "winRates": win_rates(values, delivered),
        "deliveredVsAccuracyFirst": {
            "lenient": int(delivered[:, 0].sum()) - int(delivered[:, 2].sum()),
            "strict": int(strict_ok[:, 0].sum()) - int(strict_ok[:, 2].sum()),
        },
    }
    if vectors:
        grid_rel = np.zeros_like(grid_u)
        for v, vec in enumerate(vectors):
            vals, dels = values.copy(), delivered.copy()
            vals[:, :2], dels[:, :2] = grid_vals[:, v], grid_del[:, v]
            grid_rel[:, v] = np.where(dels, normalised(vals, dels, method="minmax") @ np.array(vec), 0.0)
        result["weightGrid"] = {
            "utility": grid_summary(vectors, grid_u, grid_oracle),
            "strict": grid_summary(vectors, np.where(grid_meets, grid_u, 0.0), grid_oracle),
            "relative": grid_summary(vectors, grid_rel, None),
        }
    return result


def grid_summary(
    vectors: Sequence[Sequence[float]], grid_u: FloatArray, grid_oracle: FloatArray | None
) -> dict[str, Any]:
    means = grid_u.mean(axis=0)  # vectors x strategies
    base_idx = [STRATEGIES.index(b) for b in BASELINES]
    best_base = means[:, base_idx].max(axis=1)
    best_name = [BASELINES[int(i)] for i in means[:, base_idx].argmax(axis=1)]
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = (means[:, 0] - best_base) / best_base
    best = means[:, 0] >= best_base - 1e-12
    losses = [
        {
            "weights": dict(zip(METRICS, [round(x, 2) for x in vectors[v]], strict=True)),
            "stratos": round(float(means[v, 0]), 4),
            "winner": best_name[v],
            "winnerUtility": round(float(best_base[v]), 4),
        }
        for v in np.flatnonzero(~best)
    ]
    out: dict[str, Any] = {
        "weightVectors": len(vectors),
        "stratosBestShare": round(float(best.mean()), 3),
        "paperRuleBestShare": round(float((means[:, 1] >= best_base - 1e-12).mean()), 3),
        "improvement": {
            "min": round(float(np.nanmin(gains)), 3),
            "median": round(float(np.nanmedian(gains)), 3),
            "max": round(float(np.nanmax(gains)), 3),
            "shareAtLeast22pct": round(float(np.mean(gains >= 0.22)), 3),
        },
        "losses": losses,
    }
    if grid_oracle is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            of_oracle = means[:, 0] / grid_oracle.mean(axis=0)
        out["ofOracle"] = {
            "min": round(float(np.nanmin(of_oracle)), 3),
            "median": round(float(np.nanmedian(of_oracle)), 3),
        }
    return out


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
            progress(f"{config.name} ({seeds} seeds{', weight grid' if config.grid else ''}) ...")
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
            "tokensPerAnswer": TOKENS_PER_ANSWER,
            "utility": "per seed, each metric normalised over the seed's configuration space (1 best, 0 "
            "worst), weighted by the job's weights; no model: 0; strict: a model violating A, T, R or the "
            "budget counts as none",
            "bootstrap": f"paired over seeds, {BOOTSTRAP} resamples, percentile 95%",
        },
        "paperTable4": {
            k: dict(zip(("accuracy", "latencyMs", "costUsd", "trainingHours", "score"), v, strict=True))
            for k, v in PAPER_TABLE4.items()
        },
        "configs": results,
    }


def _ci(block: Mapping[str, Any], pct: bool = True) -> str:
    lo, hi = block["ci95"]
    if pct:
        return f"{block['improvement'] * 100:+.1f}% [{lo * 100:+.1f}, {hi * 100:+.1f}]"
    return f"{block['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def render(report: Mapping[str, Any]) -> str:
    lines = []
    for cfg in report["configs"]:
        lines.append(f"== {cfg['name']}: {cfg['description']} ({cfg['seeds']} seeds)")
        rows = []
        for name, r in cfg["rows"].items():
            lenient, strict = cfg["lenient"]["mean"][name], cfg["strict"]["mean"][name]
            rows.append(
                [
                    name,
                    f"{r['accuracy'] * 100:.2f}%",
                    f"{r['latencyMs']:.1f}",
                    f"{r['costUsd']:.2f}",
                    f"{r['trainingHours']:.2f}",
                    _ci(lenient, pct=False),
                    _ci(strict, pct=False),
                    f"{r['relativeScore']:.3f}",
                    f"{r['delivered'] * 100:.0f}% / {r['deliveredStrict'] * 100:.0f}%",
                    " ".join(f"{c}:{(v or 0) * 100:.0f}" for c, v in r["meets"].items()),
                ]
            )
        head = ["Strategy", "Acc.", "Lat ms", "Cost $", "Time h", "utility [95% CI]", "strict [95% CI]",
                "relative", "model / strict", "meets % (A T R budget)"]  # fmt: skip
        lines.append(table(head, rows))
        for mode in ("lenient", "strict", "relative"):
            b = cfg[mode]
            gain = _ci(b["improvementOverBestBaseline"])
            line = f"{mode}: Stratos vs best baseline ({b['bestBaseline']}) {gain}"
            if "ofOracle" in b:
                line += f"; of oracle {_ci(b['ofOracle'], pct=False)}"
            lines.append(line)
        for kind, g in cfg.get("weightGrid", {}).items():
            line = (
                f"weight grid, {kind} ({g['weightVectors']} vectors): Stratos best in "
                f"{g['stratosBestShare'] * 100:.0f}% (paper rule {g['paperRuleBestShare'] * 100:.0f}%), "
                f"improvement median {g['improvement']['median'] * 100:+.1f}% "
                f"[{g['improvement']['min'] * 100:+.1f}%, {g['improvement']['max'] * 100:+.1f}%]"
            )
            if "ofOracle" in g:
                line += f", of oracle median {g['ofOracle']['median']:.3f} (min {g['ofOracle']['min']:.3f})"
            lines.append(line + f"; loses at {len(g['losses'])} vector(s)")
            for loss in g["losses"][:6]:
                w = "/".join(f"{x:g}" for x in loss["weights"].values())
                lines.append(
                    f"  loses at acc/lat/cost/time {w}: {loss['stratos']:.3f} vs {loss['winner']} "
                    f"{loss['winnerUtility']:.3f}"
                )
        d = cfg["deliveredVsAccuracyFirst"]
        lines.append(f"delivered minus accuracy-first's: {d['lenient']:+d} (strict {d['strict']:+d})")
        lines.append("")
    return "\n".join(lines)


def tree_is_clean() -> bool:
    """No uncommitted change to the code the results come from (operator/, benchmarks/, examples/)."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--", "operator", "benchmarks", "examples", ":!benchmarks/results"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.returncode == 0 and not out.stdout.strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
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
    if args.out is None and not tree_is_clean():
        parser.error(
            "uncommitted changes under operator/, benchmarks/ or examples/: commit first, or pass --out"
        )
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
