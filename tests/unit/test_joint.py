"""The joint (node, student) choice against hand-computed cases, and its properties.

The hand-computed world: two GPUs with round figures, mfu 0.5, no evaluation, hosting or teacher costs.

    node small: 1x G1 (24 GiB, 100 TFLOPS, 1000 GB/s), $1/h, 10 ms
    node big:   1x G2 (80 GiB, 400 TFLOPS, 2000 GB/s), $4/h, 20 ms
    student s:  1e9 parameters, 10 GiB, 1.8e17 FLOPs -> t = 1.8e17 / (100e12 x 0.5) / 3600 = 1 h on small,
                0.25 h on big; r = 1000e9 x 0.6 / 2e9 = 300 tok/s on small, 600 on big; probe 55%
    student l:  4e9 parameters, 40 GiB (fits big only), 7.2e17 FLOPs -> 1 h on big, r = 150; probe 60%

    pair      acc  lat  cost  t     r    | normalised (1 best): acc lat cost t  r      U (equal weights)
    s/small   .55  10   $1    1     300  |                      0   1   1    0  1/3    (7/3)/5 = 0.4667
    s/big     .55  20   $1    0.25  600  |                      0   0   1    1  1      3/5     = 0.6
    l/big     .60  20   $4    1     150  |                      1   0   0    0  0      1/5     = 0.2
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratos.catalog.gpus import GPUSpec
from stratos.decide.joint import (
    CostModel,
    JointStudent,
    JointWeights,
    Limits,
    probe_plan,
    select_pair,
)
from stratos.decide.nodes import NodeFacts
from stratos.decide.servers import shortlist

G1 = GPUSpec("G1", 24, 100, 1000, 1.0)
G2 = GPUSpec("G2", 80, 400, 2000, 4.0)
SMALL = NodeFacts("small", G1, 1, 24.0, 1.0, 10.0)
BIG = NodeFacts("big", G2, 1, 80.0, 4.0, 20.0)
S = JointStudent("s", 1e9, 10.0, 1.8e17, 0.55)
L = JointStudent("l", 4e9, 40.0, 7.2e17, 0.60)
COSTS = CostModel(mfu=0.5)
EQUAL = JointWeights(1, 1, 1, 1, 1)


NO_LIMITS = Limits()


def choose(students, nodes, weights=EQUAL, limits=NO_LIMITS, margin=0.10, **kw):  # type: ignore[no-untyped-def]
    return select_pair(
        students, nodes, weights=weights, costs=COSTS, limits=limits, probe_margin=margin, **kw
    )


def test_two_nodes_two_students_by_hand() -> None:
    choice = choose([S, L], [SMALL, BIG])
    pair = choice.chosen
    assert pair is not None and (pair.node.name, pair.student) == ("big", "s")
    assert pair.utility == pytest.approx(0.6)
    assert pair.training_hours == pytest.approx(0.25) and pair.tokens_per_second == pytest.approx(600)
    assert pair.cost.total == pytest.approx(1.0) and pair.cost.training_usd == pytest.approx(1.0)
    assert (choice.pairs, choice.feasible_pairs) == (3, 3)
    runners = {(r.node.name, r.student): r for r in choice.runners_up}
    assert runners[("small", "s")].utility == pytest.approx(7 / 15)
    assert runners[("big", "l")].utility == pytest.approx(0.2)
    # What cost each runner-up most: w x (winner - runner-up), normalised.
    assert runners[("small", "s")].reason == "U 0.467 vs 0.600: training 1 h vs 0.25 h"
    assert runners[("big", "l")].reason == "U 0.200 vs 0.600: expected cost $4.00 vs $1.00"
    # l fits only the big node: probed there, and it is the fallback on the chosen node.
    assert probe_plan([S, L], [SMALL, BIG]) == {"s": SMALL, "l": BIG}
    assert choice.fallback == ("l",) and choice.ranking == ("s", "l")
    verdicts = {v.name: v for v in choice.students}
    assert verdicts["l"].kept and verdicts["l"].best_node == "big"
    assert verdicts["s"].verdict == "kept: probe 55% within 10 points of the best (60%)"


def test_a_student_that_only_fits_the_larger_node_wins_there_when_accuracy_is_all_that_counts() -> None:
    choice = choose([S, L], [SMALL, BIG], weights=JointWeights(1, 0, 0, 0, 0))
    assert choice.chosen is not None and (choice.chosen.node.name, choice.chosen.student) == ("big", "l")
    assert choice.fallback == ("s",)  # s on big, the chosen node


def test_a_budget_that_excludes_the_best_pair_and_a_tie_broken_by_latency() -> None:
    # l/big costs $4; with a $3 budget only s remains, and accuracy alone cannot tell its two nodes apart
    # (constant column: both 1), nor can cost ($1 each), so the lower latency (small, 10 ms) decides.
    choice = choose([S, L], [SMALL, BIG], weights=JointWeights(1, 0, 0, 0, 0), limits=Limits(budget=3.0))
    assert choice.chosen is not None and (choice.chosen.node.name, choice.chosen.student) == ("small", "s")
    assert choice.infeasible == {"expected cost above budget": 1}
    assert choice.runners_up[0].reason.startswith("same U 1.000; higher latency")
    verdicts = {v.name: v for v in choice.students}
    assert "no feasible pair" in verdicts["l"].verdict and "over budget on 1" in verdicts["l"].verdict


def test_identical_nodes_tie_by_name_whatever_the_input_order() -> None:
    twin_a = NodeFacts("n-a", G1, 1, 24.0, 1.0, 10.0)
    twin_b = NodeFacts("n-b", G1, 1, 24.0, 1.0, 10.0)
    for nodes in ([twin_a, twin_b], [twin_b, twin_a]):
        choice = choose([S], nodes)
        assert choice.chosen is not None and choice.chosen.node.name == "n-a"
        assert choice.runners_up[0].reason.startswith("same U 1.000, cost and latency")


def test_probe_margin_drops_weak_students_and_training_limit_leaves_no_pair() -> None:
    weak = JointStudent("weak", 5e8, 5.0, 1e17, 0.40)
    choice = choose([S, L, weak], [SMALL, BIG])
    verdicts = {v.name: v for v in choice.students}
    assert not verdicts["weak"].kept
    assert verdicts["weak"].verdict == "dropped: probe 40% more than 10 points below the best (60%)"
    assert [v.name for v in choice.students] == ["s", "l", "weak"]  # input order
    none = choose([S, L], [SMALL, BIG], limits=Limits(max_training_hours=0.1))
    assert none.chosen is None and "none of the 3 (node, student) pairs is feasible" in none.reason
    unprobed = choose([JointStudent("x", 1e9, 10.0, 1e17, None)], [SMALL])
    assert unprobed.chosen is None and unprobed.students[0].verdict == "dropped: no probe result"
    huge = choose([JointStudent("huge", 7e10, 200.0, 1e18, 0.9)], [SMALL, BIG])
    assert huge.students[0].verdict.startswith("dropped: fits no feasible node (needs 200.0 GiB")


# ------------------------------------------------------------------------------------ properties

GPUS = [
    GPUSpec("A", 24, 165, 1008, 0.4),
    GPUSpec("B", 48, 181, 864, 0.9),
    GPUSpec("C", 80, 989, 3350, 2.5),
    GPUSpec("D", 96, 148, 4000, 1.2),
]

nodes_st = st.lists(
    st.tuples(
        st.sampled_from(range(len(GPUS))),
        st.sampled_from([1, 2, 4, 8]),
        st.floats(0.1, 20.0),
        st.floats(1.0, 200.0),
    ),
    min_size=1,
    max_size=6,
)
students_st = st.lists(
    st.tuples(st.floats(1e8, 1e10), st.floats(2.0, 100.0), st.floats(1e16, 1e19), st.floats(0.0, 1.0)),
    min_size=1,
    max_size=4,
)
weights_st = st.tuples(*[st.floats(0.01, 1.0)] * 5)


def _world(raw_nodes, raw_students):  # type: ignore[no-untyped-def]
    nodes = [
        NodeFacts(f"n{i}", GPUS[g], count, GPUS[g].memory_gib, price * count, lat)
        for i, (g, count, price, lat) in enumerate(raw_nodes)
    ]
    students = [JointStudent(f"s{i}", *row) for i, row in enumerate(raw_students)]
    return nodes, students


def _objectives(pair):  # type: ignore[no-untyped-def]
    # Larger is better in every coordinate.
    return (pair.accuracy, -pair.latency_ms, -pair.cost.total, -pair.training_hours, pair.tokens_per_second)


def _all_feasible_pairs(students, nodes, limits):  # type: ignore[no-untyped-def]
    """Every feasible pair, by enumerating: choose among each pair alone plus the winner's world."""
    costs = CostModel(mfu=0.4, synthesis_usd=3.0, evaluation_tokens=1e5, hosting_hours=2.0)
    rows = []
    for s, n in itertools.product(students, nodes):
        one = select_pair([s], [n], weights=EQUAL, costs=costs, limits=limits, probe_margin=1.0)
        if one.chosen is not None:
            rows.append(one.chosen)
    return rows, costs


@settings(max_examples=60, deadline=None)
@given(nodes_st, students_st, weights_st, st.floats(0.0, 0.3), st.randoms(use_true_random=False))
def test_the_choice_is_pareto_optimal_deterministic_and_order_invariant(  # type: ignore[no-untyped-def]
    raw_nodes, raw_students, raw_weights, margin, rnd
) -> None:
    nodes, students = _world(raw_nodes, raw_students)
    weights = JointWeights(*raw_weights)
    limits = Limits(max_training_hours=50.0, min_tokens_per_second=20.0, budget=500.0)
    pairs, costs = _all_feasible_pairs(students, nodes, limits)
    choice = select_pair(students, nodes, weights=weights, costs=costs, limits=limits, probe_margin=margin)
    again = select_pair(students, nodes, weights=weights, costs=costs, limits=limits, probe_margin=margin)
    shuffled_nodes, shuffled_students = list(nodes), list(students)
    rnd.shuffle(shuffled_nodes)
    rnd.shuffle(shuffled_students)
    other = select_pair(
        shuffled_students, shuffled_nodes, weights=weights, costs=costs, limits=limits, probe_margin=margin
    )
    key = lambda c: None if c.chosen is None else (c.chosen.node.name, c.chosen.student)  # noqa: E731
    assert key(choice) == key(again) == key(other)
    assert [r.reason for r in choice.runners_up] == [r.reason for r in other.runners_up]
    if choice.chosen is None:
        return
    kept = {v.name for v in choice.students if v.kept}
    rivals = [p for p in pairs if p.student in kept]
    assert any((p.node.name, p.student) == key(choice) for p in rivals)
    mine = _objectives(choice.chosen)
    for p in rivals:
        theirs = _objectives(p)
        dominates = all(t >= m for t, m in zip(theirs, mine, strict=True)) and theirs != mine
        assert not dominates, (p, choice.chosen)


def test_large_inventories_stay_fast_enough_to_decide_in_a_tick() -> None:
    rnd = random.Random(7)
    nodes = [
        NodeFacts(
            f"n{i}", GPUS[i % 4], 1 + i % 8, GPUS[i % 4].memory_gib, rnd.uniform(0.2, 20), rnd.uniform(5, 230)
        )
        for i in range(5000)
    ]
    students = [
        JointStudent(f"s{i}", 1e9 * (i + 1), 8.0 * (i + 1), 1e17 * (i + 1), 0.5 + 0.01 * i) for i in range(16)
    ]
    choice = choose(students, nodes)
    assert choice.chosen is not None and choice.pairs > 5000
    assert len(choice.runners_up) <= 15 + 3


@settings(max_examples=40, deadline=None)
@given(nodes_st, students_st, weights_st)
def test_the_node_shortlist_keeps_every_pareto_optimal_pair(raw_nodes, raw_students, raw_weights) -> None:  # type: ignore[no-untyped-def]
    # The choice over the shortlist is Pareto-optimal among the pairs on *all* feasible nodes. (It need
    # not be the same pair: the normalisation ranges of U depend on which pairs are in the set.)
    nodes, students = _world(raw_nodes, raw_students)
    limits = Limits(max_training_hours=50.0, min_tokens_per_second=20.0, budget=500.0)
    pairs, costs = _all_feasible_pairs(students, nodes, limits)
    kw = {"weights": JointWeights(*raw_weights), "costs": costs, "limits": limits, "probe_margin": 0.2}
    everything = select_pair(students, nodes, **kw)  # type: ignore[arg-type]
    short = select_pair(students, shortlist(nodes), **kw)  # type: ignore[arg-type]
    assert (everything.chosen is None) == (short.chosen is None)
    if short.chosen is None:
        return
    kept = {v.name for v in short.students if v.kept}
    mine = _objectives(short.chosen)
    for p in pairs:
        theirs = _objectives(p)
        if p.student in kept:
            assert not (all(t >= m for t, m in zip(theirs, mine, strict=True)) and theirs != mine)
