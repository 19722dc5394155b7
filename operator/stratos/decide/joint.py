"""Joint (node, student) choice (``servers.rule: joint``, the default). Pure: no I/O.

The paper chooses the server first and the student on it afterwards. The node decides how long the
student trains, how fast it serves and what the run costs, and the student decides which nodes it fits,
so the two are chosen together here, over every feasible (node, student) pair:

1. Nodes. The feasible nodes (:mod:`stratos.decide.servers`: hard constraints; the Pareto Front Grid is
   still computed and recorded) that no other feasible node dominates in hourly cost, latency, compute,
   per-GPU memory and memory bandwidth (:func:`stratos.decide.servers.shortlist`). This filter keeps
   every Pareto-optimal pair; the grid's cells do not (a node in a dominated cell can be the best
   partner of some student; with the grid as the filter the benchmark's Stratos reached 0.946 of the
   oracle's utility, with this one 0.977).
2. Probes. Every student that fits some shortlisted node is probed once, on one GPU of the cheapest
   node where it fits (:func:`probe_plan`; ties: latency, then name).
3. Probe rule. Of the probed students, those whose probe accuracy is within ``probe_margin`` (delta) of
   the best are kept; the others are dropped. The deployment requirement A is not applied to the probe:
   it is checked after training, on held-out data, with the next student of the fallback order trained
   when the first one misses it.
4. Pairs. A kept student and a node where it fits make a pair; the pair is feasible when its training
   time t <= T, its decode throughput r >= R and its expected total cost <= the budget (when set).
5. Utility. Over the feasible pairs, each objective is min-max normalised (1 best, 0 worst; a constant
   objective gives everyone 1) and::

       U = (w_a a~ + w_l l~ + w_c c~ + w_t t~ + w_r r~) / (w_a + w_l + w_c + w_t + w_r)

   with a the probe accuracy (higher is better), l the node's latency, c the expected total cost and t the
   training time (lower is better), r the decode throughput (higher is better). With positive weights the
   winner is Pareto-optimal among the feasible pairs: a pair that another beats in one objective and
   matches in the rest has a strictly lower U.
6. Ties (equal U, exactly): lower expected cost, lower latency, fewer parameters, student name, node
   name; the answer never depends on input order.

Expected total cost of a pair (USD), every term in status::

    node price x (training t + held-out evaluation + serving.expectedHours)      the chosen node
    + synthesis: targetSamples x tokens per answer / yield x teacher price        teacher tokens
    + teacher evaluations (spent) + probes (node price x probe hours, each on its probe node)

Training time t and throughput r are the estimators of :mod:`stratos.decide.estimate`; the evaluation's
node hours are its decoded tokens over r.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stratos.decide.estimate import BF16_BYTES, DECODE_EFFICIENCY
from stratos.decide.nodes import NodeFacts

__all__ = [
    "OBJECTIVES",
    "CostBreakdown",
    "JointChoice",
    "JointStudent",
    "JointWeights",
    "PairRow",
    "StudentVerdict",
    "probe_plan",
    "select_pair",
]

OBJECTIVES = ("accuracy", "latency", "cost", "training", "throughput")
_EPS = 1e-9
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class JointWeights:
    """Weights of U (``spec.requirements.weights``); divided by their sum."""

    accuracy: float = 0.5
    latency: float = 0.1
    cost: float = 0.2
    training_time: float = 0.2
    throughput: float = 0.3

    def vector(self) -> FloatArray:
        w = np.array([self.accuracy, self.latency, self.cost, self.training_time, self.throughput], float)
        if (w < 0).any() or not w.sum() > 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return np.asarray(w / w.sum(), dtype=np.float64)


@dataclass(frozen=True)
class JointStudent:
    """One student as the joint choice sees it.

    ``memory_gib`` is the per-GPU memory it needs (the larger of LoRA training and serving with the
    serving engine's headroom, :func:`stratos.decide.placement.student_memory_gib`); ``training_flops``
    the FLOPs of its LoRA training run; ``accuracy`` its probe accuracy (None: not probed or failed).
    """

    name: str
    parameters: float
    memory_gib: float
    training_flops: float
    accuracy: float | None = None


@dataclass(frozen=True)
class CostModel:
    """What every pair's expected cost is made of, apart from the node hours of the pair itself."""

    mfu: float
    synthesis_usd: float = 0.0
    teacher_evaluation_usd: float = 0.0
    probes_usd: float = 0.0
    evaluation_tokens: float = 0.0
    hosting_hours: float = 0.0


@dataclass(frozen=True)
class Limits:
    max_training_hours: float = float("inf")
    min_tokens_per_second: float = 0.0
    budget: float | None = None


@dataclass(frozen=True)
class CostBreakdown:
    """The expected total cost of one pair, USD, by term."""

    training_usd: float
    evaluation_usd: float
    hosting_usd: float
    synthesis_usd: float
    teacher_evaluation_usd: float
    probes_usd: float

    @property
    def total(self) -> float:
        return (
            self.training_usd
            + self.evaluation_usd
            + self.hosting_usd
            + self.synthesis_usd
            + self.teacher_evaluation_usd
            + self.probes_usd
        )

    def text(self, node: NodeFacts, training_hours: float, evaluation_hours: float, hosting: float) -> str:
        price = node.hourly_cost
        parts = [
            f"training {training_hours:.3g} h x ${price:.2f}/h = ${self.training_usd:.2f}",
            f"evaluation {evaluation_hours:.3g} h = ${self.evaluation_usd:.2f}",
        ]
        if hosting > 0:
            parts.append(f"hosting {hosting:g} h = ${self.hosting_usd:.2f}")
        parts += [
            f"synthesis tokens ${self.synthesis_usd:.2f}",
            f"teacher evaluations ${self.teacher_evaluation_usd:.2f}",
            f"probes ${self.probes_usd:.2f}",
        ]
        return f"${self.total:.2f} = " + " + ".join(parts)


@dataclass(frozen=True)
class PairRow:
    """One (node, student) pair with its objectives, utility and, for a runner-up, why it lost."""

    node: NodeFacts
    student: str
    utility: float
    accuracy: float
    latency_ms: float
    training_hours: float
    tokens_per_second: float
    cost: CostBreakdown
    evaluation_hours: float
    reason: str = ""


@dataclass(frozen=True)
class StudentVerdict:
    """Why a student was kept or dropped, and its best feasible pair (if any)."""

    name: str
    parameters: float
    accuracy: float | None
    kept: bool
    verdict: str
    best_node: str | None = None
    best_utility: float | None = None
    probe_node: str | None = None


@dataclass(frozen=True)
class JointChoice:
    chosen: PairRow | None
    reason: str
    students: tuple[StudentVerdict, ...]
    runners_up: tuple[PairRow, ...] = ()
    fallback: tuple[str, ...] = ()
    pairs: int = 0
    feasible_pairs: int = 0
    nodes: int = 0
    infeasible: Mapping[str, int] = field(default_factory=dict)

    @property
    def ranking(self) -> tuple[str, ...]:
        """The chosen student, then the fallback order."""
        return ((self.chosen.student,) if self.chosen else ()) + self.fallback


def fits(student: JointStudent, node: NodeFacts) -> bool:
    return student.memory_gib <= node.gpu_memory_gib + _EPS


def probe_plan(students: Sequence[JointStudent], nodes: Sequence[NodeFacts]) -> dict[str, NodeFacts | None]:
    """Where each student is probed: the cheapest node where it fits (latency, then name), or None."""
    ordered = sorted(nodes, key=lambda n: (n.hourly_cost, n.latency_ms, n.name))
    return {s.name: next((n for n in ordered if fits(s, n)), None) for s in students}


def probe_hours(student: JointStudent, node: NodeFacts, tokens: float) -> float:
    """Node hours a probe decoding ``tokens`` takes at the estimated batch-1 decode rate."""
    return tokens / _tps(np.array([node.gpu.memory_bandwidth_gbps]), student.parameters)[0] / 3600


def _tps(bandwidth_gbps: FloatArray, parameters: float) -> FloatArray:
    """r = bandwidth x 1e9 x 0.6 / (2 B x N), as :func:`stratos.decide.estimate.decode_tokens_per_second`."""
    return np.asarray(bandwidth_gbps * 1e9 * DECODE_EFFICIENCY / (BF16_BYTES * parameters), dtype=np.float64)


def _pct(x: float) -> str:
    text = f"{x * 100:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def _points(x: float) -> str:
    return f"{x * 100:g} points"


def _normalise(values: FloatArray, *, maximise: bool) -> FloatArray:
    lo, hi = float(values.min()), float(values.max())
    if not hi - lo > 0:
        return np.ones_like(values)
    norm = (values - lo) / (hi - lo) if maximise else (hi - values) / (hi - lo)
    return np.asarray(np.clip(norm, 0.0, 1.0), dtype=np.float64)


@dataclass
class _Pairs:
    """Every (kept student, fitting node) pair as arrays (one row per pair)."""

    node: npt.NDArray[np.int64]
    student: npt.NDArray[np.int64]
    accuracy: FloatArray
    latency: FloatArray
    training: FloatArray
    throughput: FloatArray
    evaluation_hours: FloatArray
    training_usd: FloatArray
    evaluation_usd: FloatArray
    hosting_usd: FloatArray
    total: FloatArray


def _build_pairs(
    kept: list[JointStudent], nodes: Sequence[NodeFacts], costs: CostModel
) -> tuple[_Pairs, dict[str, npt.NDArray[np.bool_]]]:
    price = np.array([n.hourly_cost for n in nodes], float)
    latency = np.array([n.latency_ms for n in nodes], float)
    memory = np.array([n.gpu_memory_gib for n in nodes], float)
    hardware = np.array([n.hardware for n in nodes], float)
    bandwidth = np.array([n.gpu.memory_bandwidth_gbps for n in nodes], float)
    fixed = costs.synthesis_usd + costs.teacher_evaluation_usd + costs.probes_usd
    cols: dict[str, list[FloatArray]] = {k: [] for k in _Pairs.__dataclass_fields__}
    fit_masks: dict[str, npt.NDArray[np.bool_]] = {}
    for k, s in enumerate(kept):
        mask = s.memory_gib <= memory + _EPS
        fit_masks[s.name] = mask
        idx = np.flatnonzero(mask)
        t = s.training_flops / (hardware[idx] * 1e12 * costs.mfu) / 3600
        r = _tps(bandwidth[idx], s.parameters)
        ev = costs.evaluation_tokens / r / 3600
        p = price[idx]
        parts = {
            "node": idx.astype(float),
            "student": np.full(idx.size, float(k)),
            "accuracy": np.full(idx.size, float(s.accuracy or 0.0)),
            "latency": latency[idx],
            "training": t,
            "throughput": r,
            "evaluation_hours": ev,
            "training_usd": p * t,
            "evaluation_usd": p * ev,
            "hosting_usd": p * costs.hosting_hours,
        }
        parts["total"] = parts["training_usd"] + parts["evaluation_usd"] + parts["hosting_usd"] + fixed
        for key, value in parts.items():
            cols[key].append(np.asarray(value, float))
    arrays = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    return (
        _Pairs(
            node=arrays.pop("node").astype(np.int64),
            student=arrays.pop("student").astype(np.int64),
            **arrays,
        ),
        fit_masks,
    )


def _term_text(obj: str, mine: float, theirs: float) -> str:
    if obj == "accuracy":
        return f"probe {_pct(mine)} vs {_pct(theirs)}"
    if obj == "latency":
        return f"latency {mine:.3g} ms vs {theirs:.3g} ms"
    if obj == "cost":
        return f"expected cost ${mine:.2f} vs ${theirs:.2f}"
    if obj == "training":
        return f"training {mine:.3g} h vs {theirs:.3g} h"
    return f"throughput {mine:.0f} vs {theirs:.0f} tok/s"


def select_pair(
    students: Sequence[JointStudent],
    nodes: Sequence[NodeFacts],
    *,
    weights: JointWeights,
    costs: CostModel,
    limits: Limits,
    probe_margin: float,
    runners_up: int = 3,
    probe_nodes: Mapping[str, NodeFacts | None] | None = None,
) -> JointChoice:
    """The joint choice (see the module docstring), with a verdict for every student and runners-up."""
    names = [s.name for s in students]
    if len(set(names)) != len(names):
        raise ValueError("student names must be unique")
    w = weights.vector()
    node_names = [n.name for n in nodes]
    if len(set(node_names)) != len(node_names):
        raise ValueError("node names must be unique")
    # Canonical orders, so that nothing depends on the order of the inputs.
    studs = sorted(students, key=lambda s: s.name)
    nodes = sorted(nodes, key=lambda n: n.name)
    where = dict(probe_nodes or {})
    largest = max((n.gpu_memory_gib for n in nodes), default=0.0)

    verdicts: dict[str, StudentVerdict] = {}
    probed: list[JointStudent] = []
    for s in studs:
        if not any(fits(s, n) for n in nodes):
            verdicts[s.name] = _verdict(
                s,
                False,
                f"dropped: fits no feasible node (needs {s.memory_gib:.1f} GiB per GPU, the largest "
                f"feasible GPU has {largest:.1f} GiB)",
                where,
            )
        elif s.accuracy is None:
            verdicts[s.name] = _verdict(s, False, "dropped: no probe result", where)
        else:
            probed.append(s)
    best = max((s.accuracy or 0.0 for s in probed), default=0.0)
    kept: list[JointStudent] = []
    for s in probed:
        a = s.accuracy or 0.0
        if a >= best - probe_margin - _EPS:
            kept.append(s)
        else:
            verdicts[s.name] = _verdict(
                s,
                False,
                f"dropped: probe {_pct(a)} more than {_points(probe_margin)} below the best ({_pct(best)})",
                where,
            )

    pairs, fit_masks = _build_pairs(kept, nodes, costs)
    ok_t = pairs.training <= limits.max_training_hours + _EPS
    ok_r = pairs.throughput >= limits.min_tokens_per_second - _EPS
    ok_b = np.ones_like(ok_t) if limits.budget is None else pairs.total <= limits.budget + _EPS
    feasible = ok_t & ok_r & ok_b
    infeasible = {
        "training time above maxTrainingTime": int(np.count_nonzero(~ok_t)),
        "throughput below minTokensPerSecond": int(np.count_nonzero(ok_t & ~ok_r)),
        "expected cost above budget": int(np.count_nonzero(ok_t & ok_r & ~ok_b)),
    }
    infeasible = {k: v for k, v in infeasible.items() if v}

    idx = np.flatnonzero(feasible)
    utility = np.full(pairs.node.size, np.nan)
    order: list[int] = []
    if idx.size:
        norm = np.stack(
            [
                _normalise(pairs.accuracy[idx], maximise=True),
                _normalise(pairs.latency[idx], maximise=False),
                _normalise(pairs.total[idx], maximise=False),
                _normalise(pairs.training[idx], maximise=False),
                _normalise(pairs.throughput[idx], maximise=True),
            ],
            axis=1,
        )
        utility[idx] = norm @ w
        params = np.array([kept[int(k)].parameters for k in pairs.student[idx]], float)
        # lexsort: last key is primary. Student and node indices follow name order (canonical above).
        keys = (
            pairs.node[idx],
            pairs.student[idx],
            params,
            pairs.latency[idx],
            pairs.total[idx],
            -utility[idx],
        )
        order = idx[np.lexsort(keys)].tolist()

    def row(i: int, reason: str = "") -> PairRow:
        node = nodes[int(pairs.node[i])]
        return PairRow(
            node=node,
            student=kept[int(pairs.student[i])].name,
            utility=float(utility[i]),
            accuracy=float(pairs.accuracy[i]),
            latency_ms=float(pairs.latency[i]),
            training_hours=float(pairs.training[i]),
            tokens_per_second=float(pairs.throughput[i]),
            cost=CostBreakdown(
                training_usd=float(pairs.training_usd[i]),
                evaluation_usd=float(pairs.evaluation_usd[i]),
                hosting_usd=float(pairs.hosting_usd[i]),
                synthesis_usd=costs.synthesis_usd,
                teacher_evaluation_usd=costs.teacher_evaluation_usd,
                probes_usd=costs.probes_usd,
            ),
            evaluation_hours=float(pairs.evaluation_hours[i]),
            reason=reason,
        )

    best_of: dict[int, int] = {}
    for i in order:
        best_of.setdefault(int(pairs.student[i]), i)
    for k, s in enumerate(kept):
        head = (
            f"kept: probe {_pct(s.accuracy or 0.0)} within {_points(probe_margin)} of the best ({_pct(best)})"
        )
        if k in best_of:
            b = best_of[k]
            verdicts[s.name] = _verdict(
                s, True, head, where, nodes[int(pairs.node[b])].name, float(utility[b])
            )
        else:
            mine = pairs.student == k
            n_fit = int(np.count_nonzero(fit_masks[s.name]))
            why = [
                f"{label} on {count}"
                for label, count in (
                    ("training above T", int(np.count_nonzero(mine & ~ok_t))),
                    ("throughput below R", int(np.count_nonzero(mine & ok_t & ~ok_r))),
                    ("over budget", int(np.count_nonzero(mine & ok_t & ok_r & ~ok_b))),
                )
                if count
            ]
            verdicts[s.name] = _verdict(
                s,
                True,
                f"{head}, but no feasible pair: of the {n_fit} node(s) where it fits, " + ", ".join(why),
                where,
            )
    student_rows = tuple(verdicts[s.name] for s in students)  # input order, as the spec lists them
    base = {
        "students": student_rows,
        "pairs": int(pairs.node.size),
        "feasible_pairs": int(idx.size),
        "nodes": len(nodes),
        "infeasible": infeasible,
    }
    if not order:
        if not nodes:
            reason = "no feasible node"
        elif not kept:
            reason = "no student was kept: " + "; ".join(f"{v.name}: {v.verdict}" for v in student_rows)
        else:
            counts = ", ".join(f"{v} {k}" for k, v in infeasible.items())
            reason = f"none of the {pairs.node.size} (node, student) pairs is feasible ({counts})"
        return JointChoice(chosen=None, reason=reason, **base)  # type: ignore[arg-type]

    win = order[0]
    chosen = row(win)
    # Runners-up: the best pair of every other student, then the next best pairs overall.
    picks = [best_of[k] for k in sorted(best_of, key=lambda k: order.index(best_of[k])) if best_of[k] != win]
    for i in order[1:]:
        if len(picks) >= len(best_of) - 1 + runners_up:
            break
        if i not in picks:
            picks.append(i)
    picks.sort(key=order.index)
    norm_of = {int(i): n for i, n in zip(idx.tolist(), norm, strict=True)}
    runner_rows = tuple(row(i, _runner_reason(i, win, norm_of, w, pairs, utility, chosen)) for i in picks)
    # Fallback: other kept students with a feasible pair on the chosen node, by that pair's U.
    win_node = int(pairs.node[win])
    fallback = tuple(
        kept[int(pairs.student[i])].name for i in order if int(pairs.node[i]) == win_node and i != win
    )
    win_student = next(s for s in kept if s.name == chosen.student)
    reason = (
        f"{chosen.student} on {chosen.node.name}: highest utility U {chosen.utility:.3f} of "
        f"{idx.size} feasible (node, student) pairs ({len(kept)} student(s) kept by the probe, "
        f"{len(nodes)} node(s)); probe {_pct(win_student.accuracy or 0.0)}, training "
        f"{chosen.training_hours:.3g} h, {chosen.tokens_per_second:.0f} tok/s, latency "
        f"{chosen.latency_ms:.3g} ms, expected cost ${chosen.cost.total:.2f}"
    )
    if fallback:
        reason += f"; fallback order on this node: {', '.join(fallback)}"
    return JointChoice(chosen=chosen, reason=reason, runners_up=runner_rows, fallback=fallback, **base)  # type: ignore[arg-type]


def _verdict(
    s: JointStudent,
    kept: bool,
    text: str,
    where: Mapping[str, NodeFacts | None],
    best_node: str | None = None,
    best_utility: float | None = None,
) -> StudentVerdict:
    probe = where.get(s.name)
    return StudentVerdict(
        name=s.name,
        parameters=s.parameters,
        accuracy=s.accuracy,
        kept=kept,
        verdict=text,
        best_node=best_node,
        best_utility=best_utility,
        probe_node=probe.name if probe is not None else None,
    )


def _runner_reason(
    i: int,
    win: int,
    norm_of: Mapping[int, FloatArray],
    w: FloatArray,
    pairs: _Pairs,
    utility: FloatArray,
    chosen: PairRow,
) -> str:
    u, uw = float(utility[i]), float(utility[win])
    raw = {
        "accuracy": pairs.accuracy,
        "latency": pairs.latency,
        "cost": pairs.total,
        "training": pairs.training,
        "throughput": pairs.throughput,
    }
    if u < uw:
        loss = w * (norm_of[win] - norm_of[i])
        k = int(np.argmax(loss))
        obj = OBJECTIVES[k]
        return f"U {u:.3f} vs {uw:.3f}: {_term_text(obj, float(raw[obj][i]), float(raw[obj][win]))}"
    # Equal utility: the tie-breaks decided.
    for obj, label in (("cost", "higher expected cost"), ("latency", "higher latency")):
        if float(raw[obj][i]) != float(raw[obj][win]):
            return f"same U {u:.3f}; {label} ({_term_text(obj, float(raw[obj][i]), float(raw[obj][win]))})"
    return (
        f"same U {u:.3f}, cost and latency; ranked after {chosen.student} on {chosen.node.name} "
        "by size and name"
    )
