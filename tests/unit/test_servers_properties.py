"""Properties of select_server on random inventories (hypothesis)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stratos.catalog.gpus import GPUS
from stratos.decide.nodes import NodeFacts
from stratos.decide.servers import ServerChoice, grid_size, nondominated, select_server

SETTINGS = settings(max_examples=200, deadline=None)
SPECS = [GPUS[name] for name in ("L4", "RTX 4090", "A100 80GB", "H100", "H200")]

costs = st.one_of(
    st.sampled_from([0.2, 0.45, 0.5, 1.0, 2.5]),
    st.floats(min_value=0.0, max_value=40.0, allow_nan=False, allow_infinity=False),
)
latencies = st.one_of(
    st.sampled_from([1.0, 10.0, 50.0]),
    st.floats(min_value=0.0, max_value=500.0, allow_nan=False, allow_infinity=False),
)


@st.composite
def inventories(draw: st.DrawFn) -> list[NodeFacts]:
    size = draw(st.integers(min_value=1, max_value=30))
    nodes = []
    for i in range(size):
        spec = draw(st.sampled_from(SPECS))
        count = draw(st.sampled_from([1, 2, 4, 8]))
        nodes.append(NodeFacts(f"node-{i:02d}", spec, count, spec.memory_gib, draw(costs), draw(latencies)))
    return nodes


gammas = st.sampled_from([1e-9, 0.01, 0.2, 1.0, 5.0, 100.0])
caps = st.fixed_dictionaries(
    {
        "min_gpu_memory_gib": st.sampled_from([None, 24.0, 48.0, 80.0]),
        "max_hourly_cost": st.sampled_from([None, 1.0, 5.0, 20.0]),
        "max_latency_ms": st.sampled_from([None, 20.0, 100.0]),
    }
)


def feasible(node: NodeFacts, limits: dict[str, float | None]) -> bool:
    mem, cost, lat = limits["min_gpu_memory_gib"], limits["max_hourly_cost"], limits["max_latency_ms"]
    return (
        (mem is None or node.gpu_memory_gib >= mem)
        and (cost is None or node.hourly_cost <= cost)
        and (lat is None or node.latency_ms <= lat)
    )


def normalised(nodes: list[NodeFacts]) -> dict[str, tuple[float, float, float]]:
    """Each node's (c~, l~, h~), 0 = best, computed independently of the implementation."""

    def scale(values: list[float], maximise: bool) -> list[float]:
        lo, hi = min(values), max(values)
        if hi == lo:
            return [0.0] * len(values)
        return [((hi - v) if maximise else (v - lo)) / (hi - lo) for v in values]

    c = scale([n.hourly_cost for n in nodes], False)
    l_ = scale([n.latency_ms for n in nodes], False)
    h = scale([n.hardware for n in nodes], True)
    return {n.name: (c[i], l_[i], h[i]) for i, n in enumerate(nodes)}


@SETTINGS
@given(inventories(), gammas, caps)
def test_choice_is_feasible_and_exists_iff_something_is(
    nodes: list[NodeFacts], gamma: float, limits: dict[str, float | None]
) -> None:
    choice = select_server(nodes, cost_window=gamma, **limits)
    ok = [n for n in nodes if feasible(n, limits)]
    assert choice.feasible == len(ok)
    assert choice.candidates == len(nodes)
    assert choice.feasible + sum(choice.rejected.values()) == len(nodes)
    if not ok:
        assert choice.chosen is None
        return
    assert choice.chosen is not None and feasible(choice.chosen, limits)
    assert choice.cell in choice.pareto_cells
    assert min(cell[0] for cell in choice.pareto_cells) == choice.cell[0]
    assert all(feasible(r.facts, limits) for r in choice.runners_up)
    names = [choice.chosen.name] + [r.facts.name for r in choice.runners_up]
    assert len(set(names)) == len(names) == min(len(ok), 4)


@SETTINGS
@given(inventories(), gammas, caps)
def test_nothing_beats_the_choice_by_a_full_interval_everywhere(
    nodes: list[NodeFacts], gamma: float, limits: dict[str, float | None]
) -> None:
    choice = select_server(nodes, cost_window=gamma, **limits)
    ok = [n for n in nodes if feasible(n, limits)]
    if choice.chosen is None:
        return
    k = grid_size(max(n.hourly_cost for n in ok) - min(n.hourly_cost for n in ok), gamma)
    assert choice.grid_size == k
    norm = normalised(ok)
    # objectives that vary over the feasible set (a constant one cannot be beaten at all)
    varying = [j for j in range(3) if len({v[j] for v in norm.values()}) > 1]
    if not varying:
        return
    mine = norm[choice.chosen.name]
    step = 1.0 / k + 1e-9
    for other in ok:
        theirs = norm[other.name]
        assert not all(theirs[j] <= mine[j] - step for j in varying), (other, choice.chosen)


@SETTINGS
@given(inventories(), gammas, caps, st.randoms(use_true_random=False))
def test_same_answer_in_any_order(
    nodes: list[NodeFacts], gamma: float, limits: dict[str, float | None], rnd: random.Random
) -> None:
    first = select_server(nodes, cost_window=gamma, **limits)
    again = select_server(list(nodes), cost_window=gamma, **limits)
    shuffled = list(nodes)
    rnd.shuffle(shuffled)
    other = select_server(shuffled, cost_window=gamma, **limits)
    assert first == again
    assert first == other


def weakly_dominates(a: NodeFacts, b: NodeFacts) -> bool:
    """a at least as good as b in all three objectives and strictly better in one."""
    no_worse = a.hourly_cost <= b.hourly_cost and a.latency_ms <= b.latency_ms and a.hardware >= b.hardware
    better = a.hourly_cost < b.hourly_cost or a.latency_ms < b.latency_ms or a.hardware > b.hardware
    return no_worse and better


@SETTINGS
@given(inventories(), caps)
def test_vanishing_cost_window_picks_an_exact_pareto_optimum(
    nodes: list[NodeFacts], limits: dict[str, float | None]
) -> None:
    choice = select_server(nodes, cost_window=1e-9, **limits)
    if choice.chosen is None:
        return
    ok = [n for n in nodes if feasible(n, limits)]
    assert not any(weakly_dominates(other, choice.chosen) for other in ok)
    # and the cheapest Pareto-optimal node: with K this large the cost coordinate orders nodes by cost
    optimal = [n for n in ok if not any(weakly_dominates(o, n) for o in ok)]
    distinct = sorted({n.hourly_cost for n in ok})
    if all(b - a >= 1e-6 for a, b in itertools.pairwise(distinct)):
        # every cost difference spans many grid intervals, so only the cheapest nodes get coordinate 0
        assert choice.chosen.hourly_cost == min(n.hourly_cost for n in optimal)


@SETTINGS
@given(inventories(), gammas)
def test_any_cost_window_picks_an_exact_pareto_optimum(nodes: list[NodeFacts], gamma: float) -> None:
    choice = select_server(nodes, cost_window=gamma)
    assert choice.chosen is not None
    assert not any(weakly_dominates(other, choice.chosen) for other in nodes)


def brute_force_nondominated(cells: np.ndarray) -> np.ndarray:
    le = np.all(cells[:, None, :] <= cells[None, :, :], axis=2)  # le[q, p]: q <= p everywhere
    lt = np.any(cells[:, None, :] < cells[None, :, :], axis=2)
    return ~np.any(le & lt, axis=0)


@SETTINGS
@given(
    st.lists(st.tuples(*(st.integers(min_value=0, max_value=6),) * 3), min_size=1, max_size=80, unique=True)
)
def test_nondominated_matches_brute_force(rows: list[tuple[int, int, int]]) -> None:
    cells = np.array(rows, dtype=np.int64)
    assert nondominated(cells).tolist() == brute_force_nondominated(cells).tolist()


def test_nondominated_large_random_and_antichain() -> None:
    rng = np.random.default_rng(7)
    cells = np.unique(rng.integers(0, 40, size=(3000, 3)), axis=0)
    assert nondominated(cells).tolist() == brute_force_nondominated(cells).tolist()
    # an antichain (a + b + c constant): nothing dominates anything
    anti = np.array([(a, b, 30 - a - b) for a in range(31) for b in range(31 - a)], dtype=np.int64)
    assert nondominated(anti).all()


def test_benchmark_sized_inventory_is_consistent() -> None:
    rnd = random.Random(3)
    nodes = []
    for i in range(3732):
        spec = rnd.choice(list(GPUS.values()))
        count = rnd.choice([1, 2, 4, 8])
        cost = round(spec.default_hourly_usd * count * rnd.uniform(0.7, 1.3), 3)
        latency = round(rnd.uniform(1, 300), 1)
        nodes.append(NodeFacts(f"n{i:05d}", spec, count, spec.memory_gib, cost, latency))
    choice: ServerChoice = select_server(nodes, cost_window=0.2, runners_up=5)
    assert choice.chosen is not None
    assert not any(weakly_dominates(o, choice.chosen) for o in nodes)
    span = max(n.hourly_cost for n in nodes) - min(n.hourly_cost for n in nodes)
    assert choice.grid_size == math.ceil(span / 0.2 - 1e-9)
    assert len(choice.runners_up) == 5
