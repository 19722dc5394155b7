"""Selection speed: Pareto-Front-Grid server selection against a naive exact-Pareto baseline.

What is timed (``time.perf_counter``, one call per sample, after two warm-up calls):

- ``select_server`` (``stratos.decide.servers``) on a list of NodeFacts built directly, so that only the
  selection is timed: hard constraints, grid, Pareto Front Grid, choice and the reasons of the runners-up.
- ``gather_candidates`` (``stratos.decide.nodes``) on the same nodes as Kubernetes Node objects (plain API
  dicts with GFD labels and ``stratos.io`` annotations), timed separately: it is the other half of what
  the operator does per decision, and it is pure Python, one node at a time.
- The baseline: the same hard constraints, then the exact Pareto front of the nodes themselves by pairwise
  dominance over (cost, latency, -hardware) -- O(n^2) comparisons, vectorised with numpy in blocks of 256
  rows, so it is a naive *algorithm*, not a naive implementation -- then the same choice rule as the PFG
  (lowest cost coordinate on the same K-interval grid, then nearest the ideal point, then the same
  tie-breaks). Above ``--baseline-max`` nodes (default 10,000) it is not run: at 100,000 nodes one call
  would take minutes.

Inventories come from ``benchmarks.cloud.make_cloud`` (the paper's GPU mix; see that module), several
per size, used in turn. Every node passes the hard constraints used here (cost window 0.2 USD/h, per-GPU
memory >= 20 GiB, no cost or latency cap), which is the worst case for the grid: nothing is filtered out.

One core: OMP/MKL/OpenBLAS thread counts are set to 1 before numpy is imported, and the process pins
itself to one CPU (``--no-pin`` to skip). The garbage collector stays on, as in the operator.

Checks (reported, not asserted): selection on the same input twice and on a shuffled copy returns the
same node; the PFG's choice lies on the exact Pareto front; how often the PFG and the baseline choose the
same node (they need not: the PFG restricts the choice to non-dominated *cells*, the baseline to
non-dominated *nodes*).

Run: ``.venv/bin/python -m benchmarks.selection_speed`` (``--quick`` for a short run). Prints a table and
writes benchmarks/results/selection_speed.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from benchmarks.cloud import (  # noqa: E402
    DISTRIBUTIONS,
    PAPER_CLUSTER_SIZE,
    machine,
    make_cloud,
    node_object,
    summary,
    table,
    write_json,
)
from stratos.decide.nodes import NodeFacts, gather_candidates  # noqa: E402
from stratos.decide.servers import grid_coordinates, grid_size, select_server  # noqa: E402

SIZES = (100, 1_000, PAPER_CLUSTER_SIZE, 10_000, 100_000)
COST_WINDOW = 0.2
MIN_GPU_MEMORY_GIB = 20.0
TARGETS_MS = {PAPER_CLUSTER_SIZE: 5.0, 100_000: 100.0}
BLOCK = 256

FloatArray = npt.NDArray[np.float64]


# ------------------------------------------------------------------------------------------- baseline


def _normalise(values: FloatArray, *, maximise: bool = False) -> FloatArray:
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return np.zeros_like(values)
    return (hi - values) / (hi - lo) if maximise else (values - lo) / (hi - lo)


def exact_pareto_mask(objectives: FloatArray) -> npt.NDArray[np.bool_]:
    """Rows of ``objectives`` (m x d, minimised) that no other row dominates, by all-pairs comparison."""
    m = len(objectives)
    mask = np.ones(m, dtype=bool)
    for start in range(0, m, BLOCK):
        block = objectives[start : start + BLOCK]
        no_worse = np.all(objectives[None, :, :] <= block[:, None, :], axis=2)
        better = np.any(objectives[None, :, :] < block[:, None, :], axis=2)
        mask[start : start + BLOCK] = ~np.any(no_worse & better, axis=1)
    return mask


def naive_select(
    nodes: Sequence[NodeFacts],
    *,
    cost_window: float,
    min_gpu_memory_gib: float | None = None,
    max_hourly_cost: float | None = None,
    max_latency_ms: float | None = None,
) -> NodeFacts | None:
    """The baseline: hard constraints, exact Pareto front by O(n^2) dominance, then the PFG's choice rule."""
    feasible = [
        f
        for f in nodes
        if (min_gpu_memory_gib is None or f.gpu_memory_gib >= min_gpu_memory_gib)
        and (max_hourly_cost is None or f.hourly_cost <= max_hourly_cost)
        and (max_latency_ms is None or (f.latency_known and f.latency_ms <= max_latency_ms))
    ]
    if not feasible:
        return None
    cost = np.array([f.hourly_cost for f in feasible])
    latency = np.array([f.latency_ms for f in feasible])
    hardware = np.array([f.hardware for f in feasible])
    front = np.flatnonzero(exact_pareto_mask(np.stack([cost, latency, -hardware], axis=1)))
    k = grid_size(float(cost.max() - cost.min()), cost_window)
    norms = (_normalise(cost), _normalise(latency), _normalise(hardware, maximise=True))
    cost_coord = grid_coordinates(norms[0], k)
    distance = np.sqrt(norms[0] ** 2 + norms[1] ** 2 + norms[2] ** 2)
    cheapest = front[cost_coord[front] == cost_coord[front].min()]
    best = min(
        cheapest.tolist(),
        key=lambda i: (
            float(distance[i]),
            float(cost[i]),
            float(latency[i]),
            -float(hardware[i]),
            feasible[i].name,
        ),
    )
    return feasible[best]


# ---------------------------------------------------------------------------------------------- timing


def time_calls(fn: Callable[[int], object], runs: int, *, warmup: int = 2) -> list[float]:
    """Seconds per call of ``fn(i)`` for i in range(runs), after ``warmup`` untimed calls."""
    for i in range(warmup):
        fn(i)
    samples = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return samples


@dataclass(frozen=True)
class Plan:
    """How many timed calls at one size."""

    size: int
    select_runs: int
    gather_runs: int
    baseline_runs: int  # 0: not run


#: Timed baseline calls per size (each call is O(n^2): about 0.5 s at 3,732 nodes and 4 s at 10,000).
BASELINE_RUNS = {100: 100, 1_000: 30, PAPER_CLUSTER_SIZE: 15, 10_000: 5}


def plans(sizes: Sequence[int], *, quick: bool, baseline_max: int) -> list[Plan]:
    out = []
    for n in sizes:
        if quick:
            sel, gat, base = 20, 3, 3
        elif n <= 10_000:
            sel, gat, base = 300, 30, BASELINE_RUNS.get(n, 5)
        else:
            sel, gat, base = 60, 5, 3
        out.append(Plan(n, sel, gat, base if n <= baseline_max else 0))
    return out


def _ms(stats: dict[str, float], key: str) -> str:
    return f"{stats[key] * 1e3:.3f}" if stats.get("n") else "-"


def bench_size(plan: Plan, *, inventories: int, seed: int) -> dict[str, Any]:
    """Time PFG, baseline and gathering at one size; check agreement."""
    rng = np.random.default_rng(seed + plan.size)
    clouds = [make_cloud(plan.size, rng) for _ in range(inventories)]
    args: dict[str, Any] = {"cost_window": COST_WINDOW, "min_gpu_memory_gib": MIN_GPU_MEMORY_GIB}

    select = time_calls(lambda i: select_server(clouds[i % inventories], **args), plan.select_runs)

    objects = [node_object(f) for f in clouds[0]]
    gather = time_calls(lambda i: gather_candidates(objects), plan.gather_runs, warmup=1)
    gathered, _ = gather_candidates(objects)

    baseline: list[float] = []
    if plan.baseline_runs:
        baseline = time_calls(
            lambda i: naive_select(clouds[i % inventories], **args), plan.baseline_runs, warmup=1
        )

    # Checks on every inventory.
    stable = shuffled_same = on_front = agree = 0
    shuffle_rng = random.Random(seed)
    for cloud in clouds:
        first = select_server(cloud, **args).chosen
        again = select_server(cloud, **args).chosen
        mixed = list(cloud)
        shuffle_rng.shuffle(mixed)
        other = select_server(mixed, **args).chosen
        assert first is not None and again is not None and other is not None
        stable += first.name == again.name
        shuffled_same += first.name == other.name
        if plan.baseline_runs:
            winner = naive_select(cloud, **args)
            agree += winner is not None and winner.name == first.name
            dominated = any(
                f.hourly_cost <= first.hourly_cost
                and f.latency_ms <= first.latency_ms
                and f.hardware >= first.hardware
                and (
                    f.hourly_cost < first.hourly_cost
                    or f.latency_ms < first.latency_ms
                    or f.hardware > first.hardware
                )
                for f in cloud
            )
            on_front += not dominated
    choice = select_server(clouds[0], **args)
    return {
        "nodes": plan.size,
        "inventories": inventories,
        "selectServerSeconds": summary(select),
        "naiveExactParetoSeconds": summary(baseline) if baseline else None,
        "gatherCandidatesSeconds": summary(gather),
        "gatheredCandidates": len(gathered),
        "gridSize": choice.grid_size,
        "paretoCells": len(choice.pareto_cells),
        "checks": {
            "sameChoiceTwice": f"{stable}/{inventories}",
            "sameChoiceShuffled": f"{shuffled_same}/{inventories}",
            "pfgChoiceOnExactParetoFront": f"{on_front}/{inventories}" if plan.baseline_runs else None,
            "pfgAndBaselineChooseSameNode": f"{agree}/{inventories}" if plan.baseline_runs else None,
        },
    }


def growth(results: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """Exponent b of time ~ n^b between consecutive sizes, and a least-squares fit over sizes >= 1,000."""
    points = [
        (r["nodes"], r[key]["median"])
        for r in results
        if r.get(key) and r[key].get("n") and r[key]["median"] > 0
    ]
    out: dict[str, float] = {}
    for (n0, t0), (n1, t1) in itertools.pairwise(points):
        out[f"{n0}->{n1}"] = round(math.log(t1 / t0) / math.log(n1 / n0), 3)
    big = [(n, t) for n, t in points if n >= 1_000]
    if len(big) >= 2:
        slope = np.polyfit(np.log([n for n, _ in big]), np.log([t for _, t in big]), 1)[0]
        out["fit>=1000"] = round(float(slope), 3)
    return out


def pin_one_core() -> int | None:
    """Pin the process to one CPU it may use; returns the CPU, or None where affinity is unsupported."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def run(
    sizes: Sequence[int] = SIZES,
    *,
    quick: bool = False,
    baseline_max: int = 10_000,
    inventories: int = 3,
    seed: int = 9,
    pin: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole benchmark; returns the figures that go to the JSON file."""
    cpu = pin_one_core() if pin else None
    results = []
    for plan in plans(sizes, quick=quick, baseline_max=baseline_max):
        if progress:
            progress(f"{plan.size} nodes ...")
        results.append(bench_size(plan, inventories=inventories, seed=seed))
    targets = []
    for r in results:
        target = TARGETS_MS.get(r["nodes"])
        if target is not None:
            median_ms = r["selectServerSeconds"]["median"] * 1e3
            targets.append(
                {
                    "nodes": r["nodes"],
                    "targetMedianMs": target,
                    "medianMs": round(median_ms, 3),
                    "met": median_ms <= target,
                }
            )
    return {
        "benchmark": "selection_speed",
        "machine": {**machine(), "pinnedCpu": cpu},
        "settings": {
            "costWindow": COST_WINDOW,
            "minGpuMemoryGib": MIN_GPU_MEMORY_GIB,
            "baselineMaxNodes": baseline_max,
            "inventoriesPerSize": inventories,
            "seed": seed,
            "quick": quick,
            "timer": "time.perf_counter, one call per sample, GC on, two warm-up calls",
            "inventory": DISTRIBUTIONS,
        },
        "results": results,
        "growthExponent": {
            "selectServer": growth(results, "selectServerSeconds"),
            "naiveExactPareto": growth(results, "naiveExactParetoSeconds"),
            "gatherCandidates": growth(results, "gatherCandidatesSeconds"),
        },
        "targets": targets,
    }


def render(report: dict[str, Any]) -> str:
    rows = []
    for r in report["results"]:
        sel, base, gat = (
            r["selectServerSeconds"],
            r["naiveExactParetoSeconds"] or {},
            r["gatherCandidatesSeconds"],
        )
        speedup = f"{base['median'] / sel['median']:.0f}x" if base.get("n") else "not run"
        rows.append(
            [
                f"{r['nodes']:,}",
                _ms(sel, "median"),
                _ms(sel, "p95"),
                sel["n"],
                _ms(base, "median"),
                _ms(base, "p95"),
                speedup,
                _ms(gat, "median"),
                _ms(gat, "p95"),
                r["gridSize"],
                r["checks"]["sameChoiceShuffled"],
            ]
        )
    head = [
        "nodes",
        "PFG med ms",
        "PFG p95 ms",
        "runs",
        "naive med ms",
        "naive p95 ms",
        "naive/PFG",
        "gather med ms",
        "gather p95 ms",
        "K",
        "same choice (shuffled)",
    ]
    lines = [table(head, rows), ""]
    lines.append(
        "growth exponent b (time ~ n^b): "
        + ", ".join(f"{name} {vals.get('fit>=1000', '-')}" for name, vals in report["growthExponent"].items())
    )
    for r in report["results"]:
        checks = r["checks"]
        if checks["pfgAndBaselineChooseSameNode"] is not None:
            lines.append(
                f"{r['nodes']:,} nodes: PFG choice on the exact Pareto front "
                f"{checks['pfgChoiceOnExactParetoFront']}, PFG and baseline choose the same node "
                f"{checks['pfgAndBaselineChooseSameNode']}"
            )
    for t in report["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        lines.append(
            f"target at {t['nodes']:,} nodes: median <= {t['targetMedianMs']} ms -> "
            f"{t['medianMs']} ms, {verdict}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES))
    parser.add_argument("--quick", action="store_true", help="few runs per size (a smoke run)")
    parser.add_argument("--baseline-max", type=int, default=10_000, help="largest size the baseline runs at")
    parser.add_argument("--inventories", type=int, default=3, help="inventories per size, used in turn")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for the JSON (default benchmarks/results)"
    )
    args = parser.parse_args(argv)
    report = run(
        args.sizes,
        quick=args.quick,
        baseline_max=args.baseline_max,
        inventories=args.inventories,
        seed=args.seed,
        pin=not args.no_pin,
        progress=lambda m: print(m, flush=True),
    )
    print(render(report))
    print(f"wrote {write_json('selection_speed', report, out_dir=args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
