"""select_server on small inventories whose grid, cells and distances are worked out by hand.

Notation in the comments: c~, l~, h~ are the normalised cost, latency and hardware (0 = best), K the grid
size, cells are (cost, latency, hardware) coordinates = min(floor(x~ * K), K - 1), d the distance to the
ideal point sqrt(c~^2 + l~^2 + h~^2). The test GPU has 100 dense TFLOPS, so hardware = 100 x GPU count.
"""

from __future__ import annotations

import math

import pytest

from stratos.catalog.gpus import GPUSpec
from stratos.decide.nodes import REASON_NO_LATENCY, NodeFacts
from stratos.decide.servers import (
    REASON_COST,
    REASON_LATENCY,
    REASON_MEMORY,
    grid_coordinates,
    grid_size,
    select_server,
)

GPU = GPUSpec("Test-100", 80.0, 100.0, 1000.0, 1.0)


def node(
    name: str, cost: float, latency: float, gpus: int = 1, memory: float = 80.0, latency_known: bool = True
) -> NodeFacts:
    return NodeFacts(name, GPU, gpus, memory, cost, latency, latency_known=latency_known)


def test_single_node() -> None:
    # One feasible node: span 0 -> K = 1; every objective constant -> cell (0, 0, 0), d = 0.
    only = node("solo", 3.0, 40.0, gpus=2)
    choice = select_server([only], cost_window=0.2)
    assert choice.chosen == only
    assert choice.grid_size == 1
    assert choice.cell == (0, 0, 0)
    assert choice.pareto_cells == [(0, 0, 0)]
    assert choice.distance == 0.0
    assert choice.runners_up == []
    assert (choice.candidates, choice.feasible, choice.rejected) == (1, 1, {})
    assert "K=1" in choice.reason


def test_cheapest_node_loses_because_its_cell_is_dominated() -> None:
    # gamma = 1.0; costs 1.0, 1.5, 5.0 -> span 4.0 -> K = ceil(4.0 / 1.0) = 4.
    # cost:    A 0/4 = 0      -> 0;  B 0.5/4 = 0.125 -> floor(0.5) = 0;  C 4/4 = 1 -> min(4, 3) = 3
    # latency (10..90, span 80): A 80/80 = 1 -> 3;  B 0 -> 0;  C 40/80 = 0.5 -> floor(2.0) = 2
    # hardware (100..400, span 300, maximised): A (400-100)/300 = 1 -> 3;  B 0 -> 0;
    #          C (400-200)/300 = 0.667 -> floor(2.67) = 2
    # cells: A (0,3,3), B (0,0,0), C (3,2,2). B's cell dominates both others: PFG = {(0,0,0)}.
    # d: B = 0.125; A = sqrt(0 + 1 + 1) = 1.414; C = sqrt(1 + 0.25 + 0.444) = 1.302.
    a = node("a-cheapest", 1.0, 90.0, gpus=1)
    b = node("b-balanced", 1.5, 10.0, gpus=4)
    c = node("c-pricey", 5.0, 50.0, gpus=2)
    choice = select_server([a, b, c], cost_window=1.0)
    assert choice.grid_size == 4
    assert choice.chosen == b
    assert choice.cell == (0, 0, 0)
    assert choice.pareto_cells == [(0, 0, 0)]
    assert choice.distance == pytest.approx(0.125)
    # runners-up: all dominated; ordered by cost coordinate (A 0, C 3)
    assert [r.facts.name for r in choice.runners_up] == ["a-cheapest", "c-pricey"]
    assert [r.cell for r in choice.runners_up] == [(0, 3, 3), (3, 2, 2)]
    assert choice.runners_up[0].distance == pytest.approx(math.sqrt(2))
    assert choice.runners_up[1].distance == pytest.approx(math.sqrt(1 + 0.25 + (2 / 3) ** 2))
    for r in choice.runners_up:
        assert r.reason.startswith("dominated grid cell")
        assert "(0, 0, 0)" in r.reason


def test_one_objective_constant() -> None:
    # Same hardware everywhere -> h~ = 0 and hardware coordinate 0 for all.
    # gamma = 0.5; costs 1.0, 2.0, 1.2 -> span 1.0 -> K = 2.
    # cost: P 0 -> 0;  Q 1 -> min(2, 1) = 1;  R 0.2 -> floor(0.4) = 0
    # latency (10..50, span 40): P 20/40 = 0.5 -> floor(1.0) = 1;  Q 0 -> 0;  R 1 -> 1
    # cells: P (0,1,0), Q (1,0,0), R (0,1,0). Neither (0,1,0) nor (1,0,0) dominates the other: both PFG.
    # lowest cost coordinate: (0,1,0) holding P and R.
    # d: P = sqrt(0 + 0.25) = 0.5; R = sqrt(0.04 + 1) = 1.0198
    p = node("p", 1.0, 30.0)
    q = node("q", 2.0, 10.0)
    r = node("r", 1.2, 50.0)
    choice = select_server([q, r, p], cost_window=0.5)
    assert choice.grid_size == 2
    assert choice.chosen == p
    assert choice.cell == (0, 1, 0)
    assert choice.pareto_cells == [(0, 1, 0), (1, 0, 0)]
    assert choice.distance == pytest.approx(0.5)
    names = [(x.facts.name, x.cell, x.reason) for x in choice.runners_up]
    assert names == [
        ("r", (0, 1, 0), "same cell, farther from the ideal point (1.02 vs 0.50)"),
        ("q", (1, 0, 0), "higher-cost grid cell (1 vs 0)"),
    ]


def test_another_pareto_cell_with_the_same_cost_coordinate() -> None:
    # gamma = 1.0; costs 1.0, 1.2, 5.0 -> span 4 -> K = 4.
    # cost: U 0 -> 0;  V 0.2/4 = 0.05 -> 0;  W 1 -> 3
    # latency (5..40, span 35): U 0 -> 0;  V 1 -> 3;  W 15/35 = 0.4286 -> floor(1.71) = 1
    # hardware (100..800, span 700): U 1 -> 3;  V 0 -> 0;  W 600/700 = 0.857 -> floor(3.43) = 3
    # cells: U (0,0,3), V (0,3,0), W (3,1,3); U dominates W. PFG = {(0,0,3), (0,3,0)}, both cost 0.
    # d: U = sqrt(0 + 0 + 1) = 1.0; V = sqrt(0.0025 + 1 + 0) = 1.00125 -> U wins by a hair.
    u = node("u", 1.0, 5.0, gpus=1)
    v = node("v", 1.2, 40.0, gpus=8)
    w = node("w", 5.0, 20.0, gpus=2)
    choice = select_server([w, v, u], cost_window=1.0)
    assert choice.chosen == u
    assert choice.cell == (0, 0, 3)
    assert choice.pareto_cells == [(0, 0, 3), (0, 3, 0)]
    assert [(x.facts.name, x.cell) for x in choice.runners_up] == [("v", (0, 3, 0)), ("w", (3, 1, 3))]
    assert choice.runners_up[0].reason == (
        "Pareto cell (0, 3, 0) with the same cost coordinate, farther from the ideal point (1.001 vs 1.000)"
    )
    assert choice.runners_up[1].reason == (
        "dominated grid cell: Pareto cell (0, 0, 3) is at least as good in every objective"
    )


def test_tie_on_distance_broken_by_cost() -> None:
    # gamma = 10; costs 1.0 and 2.0 -> span 1 -> K = ceil(0.1) = 1: one cell (0,0,0).
    # X: c~ 0, l~ 1 -> d = 1;  Y: c~ 1, l~ 0 -> d = 1. Tie -> lower hourly cost wins: X.
    x = node("x", 1.0, 20.0)
    y = node("y", 2.0, 10.0)
    choice = select_server([y, x], cost_window=10.0)
    assert choice.grid_size == 1
    assert choice.chosen == x
    assert choice.distance == 1.0
    (runner,) = choice.runners_up
    assert runner.facts == y
    assert runner.reason == (
        "same cell, equally far from the ideal point (1.0000); higher hourly cost (2.00 vs 1.00 USD/h)"
    )


def test_identical_nodes_tie_broken_by_name() -> None:
    twins = [node(name, 2.0, 30.0, gpus=2) for name in ("node-b", "node-a", "node-c")]
    choice = select_server(twins, cost_window=0.2)
    assert choice.chosen is not None and choice.chosen.name == "node-a"
    assert [r.facts.name for r in choice.runners_up] == ["node-b", "node-c"]
    assert choice.runners_up[0].reason.endswith("identical objectives; name sorts after 'node-a'")


def test_tie_on_distance_and_cost_broken_by_latency() -> None:
    # Equal cost -> K = 1, c~ = 0. X: l~ 0, h~ (200-100)/100 = 1 -> d = 1; Y: l~ 1, h~ 0 -> d = 1.
    # Tie on d and cost -> lower latency wins: X.
    x = node("x", 1.0, 10.0, gpus=1)
    y = node("y", 1.0, 20.0, gpus=2)
    choice = select_server([y, x], cost_window=0.2)
    assert choice.chosen == x
    assert choice.runners_up[0].reason == (
        "same cell, equally far from the ideal point (1.0000); higher latency (20.00 vs 10.00 ms)"
    )


def test_more_hardware_wins_when_all_else_equal() -> None:
    # Same cost and latency: only h~ differs (b 0, a 1), so d: b 0, a 1.
    a = node("a", 1.0, 10.0, gpus=1)
    b = node("b", 1.0, 10.0, gpus=2)
    choice = select_server([a, b], cost_window=0.2)
    assert choice.chosen == b
    assert choice.runners_up[0].reason == "same cell, farther from the ideal point (1.00 vs 0.00)"


def test_every_node_filtered_out_counts_reasons() -> None:
    nodes = [
        node("small", 0.5, 10.0, memory=16.0),
        node("small2", 9.0, 999.0, memory=20.0),  # fails memory first: counted once, under memory
        node("dear", 9.0, 10.0),
        node("far", 1.0, 500.0),
        node("unknown", 1.0, 0.0, latency_known=False),
    ]
    choice = select_server(
        nodes,
        cost_window=0.2,
        min_gpu_memory_gib=24.0,
        max_hourly_cost=5.0,
        max_latency_ms=100.0,
        rejected={"not Ready": 2, "unknown GPU model": 1},
    )
    assert choice.chosen is None
    assert choice.cell is None and choice.grid_size == 0 and choice.pareto_cells == []
    assert choice.runners_up == []
    assert (choice.candidates, choice.feasible) == (5, 0)
    assert choice.rejected == {
        REASON_MEMORY: 2,
        REASON_COST: 1,
        REASON_LATENCY: 1,
        REASON_NO_LATENCY: 1,
        "not Ready": 2,
        "unknown GPU model": 1,
    }
    assert choice.reason == (
        "No feasible node among 5 candidate(s); rejected: 2 insufficient GPU memory, 2 not Ready, "
        "1 hourly cost above maxHourlyCost, 1 latency above maxLatencyMs, 1 no latency known, "
        "1 unknown GPU model."
    )


def test_no_nodes_at_all() -> None:
    choice = select_server([], cost_window=0.2)
    assert choice.chosen is None
    assert choice.reason == "No feasible node: no GPU nodes were offered."
    choice = select_server([], cost_window=0.2, rejected={"no GPU": 3})
    assert choice.rejected == {"no GPU": 3}
    assert "3 no GPU" in choice.reason


def test_constraints_are_inclusive_and_rejections_merge() -> None:
    at_cap = node("at-cap", 3.0, 100.0, memory=24.0)
    choice = select_server(
        [at_cap, node("over", 3.01, 10.0)],
        cost_window=0.2,
        min_gpu_memory_gib=24.0,
        max_hourly_cost=3.0,
        max_latency_ms=100.0,
        rejected={"not Ready": 1},
    )
    assert choice.chosen == at_cap
    assert choice.rejected == {REASON_COST: 1, "not Ready": 1}
    assert (choice.candidates, choice.feasible) == (2, 1)
    assert "rejected: 1 hourly cost above maxHourlyCost, 1 not Ready" in choice.reason


def test_unknown_latency_is_fine_without_a_latency_cap() -> None:
    nodes = [node("a", 1.0, 0.0, latency_known=False), node("b", 2.0, 0.0, gpus=4, latency_known=False)]
    choice = select_server(nodes, cost_window=0.5)
    assert choice.chosen is not None
    assert "no latency information" in choice.reason


def test_runners_up_count() -> None:
    nodes = [node(f"n{i}", 1.0 + i / 10, 10.0 + i) for i in range(6)]
    assert select_server(nodes, cost_window=0.2, runners_up=0).runners_up == []
    assert len(select_server(nodes, cost_window=0.2, runners_up=2).runners_up) == 2
    assert len(select_server(nodes, cost_window=0.2, runners_up=20).runners_up) == 5


def test_grid_size_formula() -> None:
    assert grid_size(0.0, 0.2) == 1
    assert grid_size(0.8, 0.2) == 4  # 0.8 / 0.2 is 4.000000000000001 in binary: still 4 intervals
    assert grid_size(0.81, 0.2) == 5
    assert grid_size(19.6, 0.2) == 98
    assert grid_size(0.05, 0.2) == 1
    assert grid_size(-2.0, 1.0) == 2  # |C_best - C_worst|
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            grid_size(1.0, bad)
    with pytest.raises(ValueError):
        select_server([node("a", 1.0, 1.0)], cost_window=0.0)


def test_grid_coordinate_boundaries() -> None:
    import numpy as np

    # costs 0.2, 0.6, 1.0 with K = 4: 0.6 sits exactly on the boundary between intervals 1 and 2
    # ((0.6 - 0.2) / 0.8 * 4 = 2 in decimal, 1.9999999999999998 in binary) -> coordinate 2.
    norm = (np.array([0.2, 0.6, 1.0]) - 0.2) / 0.8
    assert grid_coordinates(norm, 4).tolist() == [0, 2, 3]
    choice = select_server(
        [node("lo", 0.2, 1.0), node("mid", 0.6, 1.0), node("hi", 1.0, 1.0)], cost_window=0.2, runners_up=5
    )
    assert choice.grid_size == 4
    cells = {r.facts.name: r.cell for r in choice.runners_up}
    assert cells == {"mid": (2, 0, 0), "hi": (3, 0, 0)}
