"""Server selector: hard constraints, then the Pareto Front Grid (PFG), as in the Stratos paper.

Each candidate node is a triple (H, C, L): hardware H = gpu_count x dense BF16 TFLOPS (maximised), hourly
cost C in USD (minimised) and latency L in ms (minimised); see :class:`stratos.decide.nodes.NodeFacts`.

1. Hard constraints. A node is infeasible if its per-GPU memory is below ``min_gpu_memory_gib``, its cost
   above ``max_hourly_cost`` or its latency above ``max_latency_ms`` (or unknown while that cap is set).
   Each infeasible node is counted once, under the first constraint it fails, in that order; the counts
   are merged with the ``rejected`` counts from gathering.
2. Grid size. Over the feasible set F, with gamma the cost window (USD/h)::

       K = ceil(|C_best - C_worst| / gamma),   K = 1 when C_best == C_worst

   (the ceiling forgives a relative 1e-9, so that a span that is an exact multiple of gamma in decimal
   does not gain an interval from binary rounding).
3. Coordinates. Each objective is normalised over F so that 0 is best and 1 worst::

       c~ = (C - C_min) / (C_max - C_min)
       l~ = (L - L_min) / (L_max - L_min)
       h~ = (H_max - H) / (H_max - H_min)          (0 for every node when the objective is constant)

   and cut into K equal intervals: ``coordinate = min(floor(x~ * K + 1e-9), K - 1)``. A node's cell is
   (cost, latency, hardware) coordinates. (The 1e-9 again only undoes binary rounding on boundaries.)
4. Pareto Front Grid. The PFG is the set of occupied cells that no other occupied cell dominates; cell p
   dominates cell q when p <= q in all three coordinates and p != q.
5. Choice. Among the PFG cells with the lowest cost coordinate, the node nearest the ideal point::

       d = sqrt(c~^2 + l~^2 + h~^2)

   Ties are broken by (hourly cost, latency, -hardware, name), so the answer never depends on input order.

Runners-up continue the same ordering: nodes in PFG cells by (cost coordinate, d, tie-breaks), then nodes in
dominated cells in the same order. Each gets a reason in words.

The work is vectorised with numpy: normalisation and coordinates are array arithmetic, occupied cells come
from one integer sort of encoded cells, and the non-dominated filter (:func:`nondominated`) is pivot
pruning plus a sort-based sweep; only the handful of best nodes are ever ranked in Python. On one core
this takes about 1 ms for 3,732 nodes and about 35 ms for 100,000, most of it reading the NodeFacts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np
import numpy.typing as npt

from stratos.decide.nodes import REASON_NO_LATENCY, NodeFacts

__all__ = [
    "REASON_COST",
    "REASON_LATENCY",
    "REASON_MEMORY",
    "RankedServer",
    "ServerChoice",
    "grid_coordinates",
    "grid_size",
    "nondominated",
    "select_server",
]

REASON_MEMORY = "insufficient GPU memory"
REASON_COST = "hourly cost above maxHourlyCost"
REASON_LATENCY = "latency above maxLatencyMs"

#: Upper bound on K, so that a vanishing cost window cannot overflow integer cell codes.
MAX_GRID_SIZE = 1 << 40
_EPS = 1e-9

Cell = tuple[int, int, int]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RankedServer:
    """A feasible node that was not chosen, with its grid cell, distance to the ideal point and why."""

    facts: NodeFacts
    cell: Cell
    distance: float
    reason: str


@dataclass(frozen=True)
class ServerChoice:
    """The outcome of :func:`select_server`.

    ``candidates`` counts the NodeFacts passed in, ``feasible`` those that met the hard constraints;
    ``rejected`` maps reason -> number of nodes (from gathering and from the hard constraints).
    ``grid_size`` is K (0 when nothing was feasible); ``cell`` and ``distance`` describe the winner.
    """

    chosen: NodeFacts | None
    grid_size: int
    cell: Cell | None
    pareto_cells: list[Cell]
    runners_up: list[RankedServer]
    candidates: int
    feasible: int
    rejected: dict[str, int]
    reason: str
    distance: float | None = None
    cost_window: float = 0.0
    #: The feasible nodes no other feasible node dominates in (hourly cost, latency, hardware, per-GPU
    #: memory, memory bandwidth), by (hourly cost, latency, -hardware, name): the shortlist the joint
    #: (node, student) choice of :mod:`stratos.decide.joint` ranges over (see :func:`shortlist`).
    front: tuple[NodeFacts, ...] = ()
    front_cells: tuple[Cell, ...] = ()

    def cell_of(self, name: str) -> Cell | tuple[()]:
        """The grid cell of a shortlisted node (empty when it is not in the shortlist)."""
        for node, cell in zip(self.front, self.front_cells, strict=True):
            if node.name == name:
                return cell
        return ()


def grid_size(cost_span: float, cost_window: float) -> int:
    """K = ceil(|C_best - C_worst| / gamma), at least 1, at most MAX_GRID_SIZE."""
    if not (math.isfinite(cost_window) and cost_window > 0):
        raise ValueError(f"cost window must be a positive number, got {cost_window!r}")
    span = abs(cost_span)
    if not span > 0:
        return 1
    ratio = span / cost_window
    if not math.isfinite(ratio) or ratio >= MAX_GRID_SIZE:
        return MAX_GRID_SIZE
    return max(1, math.ceil(ratio * (1 - _EPS)))


def _normalise(values: FloatArray, *, maximise: bool = False) -> FloatArray:
    """Min-max normalisation over the array with 0 = best; a constant array gives all zeros."""
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo
    if not span > 0:
        return np.zeros_like(values)
    norm = (hi - values) / span if maximise else (values - lo) / span
    return np.clip(norm, 0.0, 1.0)


def grid_coordinates(norm: FloatArray, k: int) -> IntArray:
    """min(floor(x~ * K + 1e-9), K - 1) for normalised values x~ in [0, 1]."""
    coords = np.floor(norm * float(k) + _EPS)
    return np.minimum(coords, float(k - 1)).astype(np.int64)


# Strictly positive weights whose minimisers serve as pivots in :func:`nondominated`.
_PIVOT_WEIGHTS = ((1, 1, 1), (1, 2, 4), (4, 2, 1), (2, 4, 1), (1, 4, 2), (4, 1, 2), (2, 1, 4))


def nondominated(cells: IntArray) -> BoolArray:
    """Mask of the rows of ``cells`` (m x 3, distinct rows) that no other row dominates (minimisation).

    Row q dominates row p when q <= p in every coordinate (and q != p; rows are distinct). Two vectorised
    stages: (1) pivots, the rows minimising a few strictly positive weighted sums, cannot be dominated (if
    q dominated p, w . q < w . p), so every row a pivot dominates is dropped in one pass per pivot;
    (2) the survivors go through a sort-based sweep (:func:`_sweep`). Dropping dominated rows never changes
    the answer for the others, because every dominated row is dominated by some non-dominated row, and
    those all survive.
    """
    m = len(cells)
    if m <= 1:
        return np.ones(m, dtype=bool)
    c0, c1, c2 = (np.ascontiguousarray(cells[:, j], dtype=np.int64) for j in range(3))
    pivots = sorted({int(np.argmin(w0 * c0 + w1 * c1 + w2 * c2)) for w0, w1, w2 in _PIVOT_WEIGHTS})
    alive = np.ones(m, dtype=bool)
    for p in pivots:
        alive &= (c0 < c0[p]) | (c1 < c1[p]) | (c2 < c2[p])
    alive[pivots] = True
    survivors = np.flatnonzero(alive)
    result = np.zeros(m, dtype=bool)
    result[survivors] = _sweep(c0[survivors], c1[survivors], c2[survivors])
    return result


def _sort_order(a: IntArray, b: IntArray, c: IntArray) -> IntArray:
    """Indices sorting distinct non-negative rows (a, b, c) lexicographically."""
    rb, rc = int(b.max()) + 1, int(c.max()) + 1
    if (int(a.max()) + 1) * rb * rc < (1 << 62):
        return np.argsort((a * rb + b) * rc + c)  # one integer key: much faster than lexsort
    return np.lexsort((c, b, a))


def _sweep(x: IntArray, y: IntArray, z: IntArray) -> BoolArray:
    """Non-dominated mask of distinct rows (x, y, z) by a sweep (see :func:`nondominated`).

    Sweep along the axis with the fewest distinct values (a): rows sorted by (a, b, c). A row is dominated
    iff an earlier row has b' <= b and c' <= c. Within one a-level this is an exclusive running minimum of
    c (rows are sorted by b, then c); across levels it is a query against the staircase of non-dominated
    (b, c) pairs seen so far (b ascending, c strictly descending), answered with ``np.searchsorted``. Cost:
    one vectorised step per distinct a value (the hardware axis, with few distinct values, in practice),
    each O(l + s log s) for l rows in the level and a staircase of size s.
    """
    m = len(x)
    result = np.ones(m, dtype=bool)
    if m <= 1:
        return result
    columns = (x, y, z)
    distinct = [int(np.count_nonzero(np.diff(np.sort(col)))) for col in columns]
    ax = int(np.argmin(distinct))
    a, b, c = columns[ax], *(columns[j] for j in range(3) if j != ax)
    order = _sort_order(a, b, c)
    a_s, b_s, c_s = a[order], b[order], c[order]
    starts = np.flatnonzero(np.concatenate(([True], a_s[1:] != a_s[:-1])))
    ends = np.append(starts[1:], m)
    dominated = np.zeros(m, dtype=bool)
    stair_b = np.empty(0, dtype=np.int64)
    stair_c = np.empty(0, dtype=np.int64)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        lb, lc = b_s[s:e], c_s[s:e]
        dom = np.zeros(e - s, dtype=bool)
        if e - s > 1:
            dom[1:] = lc[1:] >= np.minimum.accumulate(lc)[:-1]
        if stair_b.size:
            idx = np.searchsorted(stair_b, lb, side="right") - 1
            dom |= (idx >= 0) & (stair_c[np.maximum(idx, 0)] <= lc)
        dominated[s:e] = dom
        keep_b, keep_c = lb[~dom], lc[~dom]
        if keep_b.size:
            all_b = np.concatenate((stair_b, keep_b))
            all_c = np.concatenate((stair_c, keep_c))
            o = np.lexsort((all_c, all_b))
            all_b, all_c = all_b[o], all_c[o]
            keep = np.ones(all_b.size, dtype=bool)
            keep[1:] = all_c[1:] < np.minimum.accumulate(all_c)[:-1]
            stair_b, stair_c = all_b[keep], all_c[keep]
    result[order] = ~dominated
    return result


def _unique_rows(codes: IntArray) -> tuple[IntArray, IntArray]:
    """(index of one representative row per distinct code, inverse map row -> distinct code number).

    Equivalent to ``np.unique(codes, return_index=True, return_inverse=True)[1:]`` up to which duplicate
    represents its group, but built on the unstable (much faster) default argsort.
    """
    order = np.argsort(codes)
    ordered = codes[order]
    head = np.empty(len(ordered), dtype=bool)
    head[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=head[1:])
    inverse = np.empty(len(ordered), dtype=np.int64)
    inverse[order] = np.cumsum(head) - 1
    return order[head], inverse


def _encode(coords: IntArray, k: int) -> IntArray:
    """One int64 per cell, order-preserving (lexicographic); dense per-axis ranks when K is huge."""
    if k <= (1 << 20):
        return (coords[:, 0] * k + coords[:, 1]) * k + coords[:, 2]
    ranks = [_unique_rows(coords[:, j])[1] for j in range(3)]
    size = len(coords) + 1
    return (ranks[0] * size + ranks[1]) * size + ranks[2]


def _pair(x: float, y: float) -> str:
    """'x vs y' with just enough decimals to tell them apart."""
    for digits in range(2, 10):
        sx, sy = f"{x:.{digits}f}", f"{y:.{digits}f}"
        if sx != sy:
            return f"{sx} vs {sy}"
    return f"{x!r} vs {y!r}"


def _cell_text(cell: Cell) -> str:
    return "(" + ", ".join(str(v) for v in cell) + ")"


def _summary(rejected: Mapping[str, int]) -> str:
    items = sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{count} {reason}" for reason, count in items)


@dataclass
class _Grid:
    """Arrays over the feasible nodes of one selection (``index`` maps them back into ``nodes``)."""

    nodes: list[NodeFacts]
    index: IntArray
    cost: FloatArray
    latency: FloatArray
    hardware: FloatArray
    k: int
    coords: IntArray
    distance: FloatArray
    in_pfg: BoolArray
    pfg_cells: IntArray

    def node(self, i: int) -> NodeFacts:
        return self.nodes[int(self.index[i])]

    def cell(self, i: int) -> Cell:
        a, b, c = (int(v) for v in self.coords[i])
        return (a, b, c)

    def tiebreak(self, i: int) -> tuple[float, float, float, str]:
        return (float(self.cost[i]), float(self.latency[i]), -float(self.hardware[i]), self.node(i).name)


def _column(nodes: list[NodeFacts], attr: str) -> FloatArray:
    return np.fromiter(map(attrgetter(attr), nodes), dtype=np.float64, count=len(nodes))


def _build_grid(
    nodes: list[NodeFacts],
    index: IntArray,
    cost: FloatArray,
    latency: FloatArray,
    hardware: FloatArray,
    cost_window: float,
) -> _Grid:
    k = grid_size(float(cost.max() - cost.min()), cost_window)
    norms = [_normalise(cost), _normalise(latency), _normalise(hardware, maximise=True)]
    coords = np.stack([grid_coordinates(x, k) for x in norms], axis=1)
    distance = np.sqrt(norms[0] ** 2 + norms[1] ** 2 + norms[2] ** 2)
    first, inverse = _unique_rows(_encode(coords, k))
    cells = coords[first]
    pfg = nondominated(cells)
    return _Grid(nodes, index, cost, latency, hardware, k, coords, distance, pfg[inverse], cells[pfg])


def _ranked(grid: _Grid, want: int) -> list[int]:
    """Indices of the ``want`` best nodes: (dominated, cost coordinate, distance, tie-breaks)."""
    primary = (~grid.in_pfg).astype(np.int64) * grid.k + grid.coords[:, 0]
    m = len(primary)
    want = min(want, m)
    kth = np.partition(primary, want - 1)[want - 1]
    subset = np.flatnonzero(primary <= kth)
    if subset.size > want:
        # Narrow by (primary, distance) without a full sort: dense rank of primary + distance / 2 is
        # monotone in that order because distance <= sqrt(3) < 2. Ties at the boundary stay in.
        _, rank = _unique_rows(primary[subset])
        key = rank + grid.distance[subset] / 2.0
        boundary = np.partition(key, want - 1)[want - 1]
        subset = subset[key <= boundary]
    order = sorted(
        subset.tolist(), key=lambda i: (int(primary[i]), float(grid.distance[i]), grid.tiebreak(i))
    )
    return order[:want]


def _runner_up_reason(grid: _Grid, i: int, w: int) -> str:
    cell, win_cell = grid.cell(i), grid.cell(w)
    if not grid.in_pfg[i]:
        better = grid.pfg_cells[np.all(grid.pfg_cells <= grid.coords[i], axis=1)]
        first = min((int(a), int(b), int(c)) for a, b, c in better)
        return f"dominated grid cell: Pareto cell {_cell_text(first)} is at least as good in every objective"
    if cell[0] > win_cell[0]:
        return f"higher-cost grid cell ({cell[0]} vs {win_cell[0]})"
    d, dw = float(grid.distance[i]), float(grid.distance[w])
    where = "same cell"
    if cell != win_cell:
        where = f"Pareto cell {_cell_text(cell)} with the same cost coordinate"
    if d > dw:
        return f"{where}, farther from the ideal point ({_pair(d, dw)})"
    mine, theirs = grid.tiebreak(i), grid.tiebreak(w)
    prefix = f"{where}, equally far from the ideal point ({d:.4f}); "
    if mine[0] != theirs[0]:
        return prefix + f"higher hourly cost ({_pair(mine[0], theirs[0])} USD/h)"
    if mine[1] != theirs[1]:
        return prefix + f"higher latency ({_pair(mine[1], theirs[1])} ms)"
    if mine[2] != theirs[2]:
        return prefix + f"less hardware ({_pair(-mine[2], -theirs[2])} TFLOPS)"
    return prefix + f"identical objectives; name sorts after {grid.node(w).name!r}"


def _hard_constraints(
    nodes: list[NodeFacts],
    min_gpu_memory_gib: float | None,
    max_hourly_cost: float | None,
    max_latency_ms: float | None,
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, Counter[str]]:
    """Feasible indices and their (cost, latency, hardware) arrays; infeasible nodes counted by reason."""
    cost = _column(nodes, "hourly_cost")
    latency = _column(nodes, "latency_ms")
    hardware = _column(nodes, "gpu_count") * _column(nodes, "gpu.bf16_dense_tflops")
    failed = np.zeros(len(nodes), dtype=bool)
    rejected: Counter[str] = Counter()

    def fail(reason: str, mask: BoolArray) -> None:
        new = mask & ~failed
        if new.any():
            rejected[reason] += int(np.count_nonzero(new))
            failed[new] = True

    if min_gpu_memory_gib is not None:
        fail(REASON_MEMORY, _column(nodes, "gpu_memory_gib") < min_gpu_memory_gib)
    if max_hourly_cost is not None:
        fail(REASON_COST, cost > max_hourly_cost)
    if max_latency_ms is not None:
        known = np.fromiter(map(attrgetter("latency_known"), nodes), dtype=bool, count=len(nodes))
        fail(REASON_NO_LATENCY, ~known)
        fail(REASON_LATENCY, latency > max_latency_ms)
    index = np.flatnonzero(~failed)
    return index, cost[index], latency[index], hardware[index], rejected


def select_server(
    candidates: Sequence[NodeFacts],
    *,
    cost_window: float,
    min_gpu_memory_gib: float | None = None,
    max_hourly_cost: float | None = None,
    max_latency_ms: float | None = None,
    runners_up: int = 3,
    rejected: Mapping[str, int] | None = None,
) -> ServerChoice:
    """Pick the server by hard constraints and the Pareto Front Grid (see the module docstring).

    Raises ValueError only for a cost window that is not a positive number; everything else about the
    inventory (including an empty one) is answered with a ServerChoice whose ``reason`` says what happened.
    """
    grid_size(0.0, cost_window)  # validates gamma
    nodes = list(candidates)
    index, cost, latency, hardware, constraint_rejections = _hard_constraints(
        nodes, min_gpu_memory_gib, max_hourly_cost, max_latency_ms
    )
    feasible = int(index.size)
    merged = Counter({k: int(v) for k, v in (rejected or {}).items() if int(v) > 0})
    merged.update(constraint_rejections)
    all_rejected = dict(sorted(merged.items()))
    if not feasible:
        if all_rejected:
            reason = f"No feasible node among {len(nodes)} candidate(s); rejected: {_summary(all_rejected)}."
        else:
            reason = "No feasible node: no GPU nodes were offered."
        return ServerChoice(
            None, 0, None, [], [], len(nodes), 0, all_rejected, reason, cost_window=cost_window
        )

    grid = _build_grid(nodes, index, cost, latency, hardware, cost_window)
    order = _ranked(grid, max(0, runners_up) + 1)
    w = order[0]
    ranked = [
        RankedServer(grid.node(i), grid.cell(i), float(grid.distance[i]), _runner_up_reason(grid, i, w))
        for i in order[1:]
    ]
    pareto = sorted((int(a), int(b), int(c)) for a, b, c in grid.pfg_cells)
    front = sorted(shortlist_indices(grid), key=lambda i: _node_order(grid.node(i)))
    winner = grid.node(w)
    cell = grid.cell(w)
    in_cheapest = int(np.count_nonzero(grid.in_pfg & (grid.coords[:, 0] == cell[0])))
    span = float(grid.cost.max() - grid.cost.min())
    reason = (
        f"grid cell {_cell_text(cell)} (cost, latency, hardware; K={grid.k} from a cost span of "
        f"{span:.2f} USD/h and a cost window of {cost_window:g} USD/h) has the lowest cost coordinate of "
        f"the {len(pareto)} Pareto-front cell(s); of the {in_cheapest} node(s) in such cells this one is "
        f"nearest the ideal point (distance {float(grid.distance[w]):.3f}); {feasible} of {len(nodes)} "
        f"candidate(s) feasible"
    )
    if all_rejected:
        reason += f"; rejected: {_summary(all_rejected)}"
    if not winner.latency_known:
        reason += "; no latency information, so latency did not count"
    return ServerChoice(
        chosen=winner,
        grid_size=grid.k,
        cell=cell,
        pareto_cells=pareto,
        runners_up=ranked,
        candidates=len(nodes),
        feasible=feasible,
        rejected=all_rejected,
        reason=reason + ".",
        distance=float(grid.distance[w]),
        cost_window=cost_window,
        front=tuple(grid.node(i) for i in front),
        front_cells=tuple(grid.cell(i) for i in front),
    )


def _node_order(node: NodeFacts) -> tuple[float, float, float, str]:
    return (node.hourly_cost, node.latency_ms, -node.hardware, node.name)


def _attributes(node: NodeFacts) -> tuple[float, float, float, float, float]:
    """What a node contributes to any (node, student) pair, each oriented so that smaller is better."""
    return (
        node.hourly_cost,
        node.latency_ms,
        -node.hardware,
        -node.gpu_memory_gib,
        -node.gpu.memory_bandwidth_gbps,
    )


def shortlist(nodes: Sequence[NodeFacts]) -> list[NodeFacts]:
    """The nodes that no other node dominates in (cost, latency, hardware, memory, bandwidth).

    Keeps every Pareto-optimal (node, student) pair: every pair objective is monotone in these attributes
    (fit in per-GPU memory, training time in hardware, decode rate in bandwidth, expected cost in price and
    both times, latency), so a pair on a dominated node is matched or beaten in every objective by the
    same student on the node that dominates it. (The utility's min-max ranges do depend on the set, so
    the chosen pair can differ from a choice over every feasible node; both are Pareto-optimal.)
    The grid's cells are too coarse for this: a node in a dominated cell
    can be the best partner of some student.) Identical hardware is filtered first by a sort over
    (cost, latency), the few survivors then against each other.
    """
    groups: dict[tuple[float, float, float], list[NodeFacts]] = {}
    for n in nodes:
        groups.setdefault(_attributes(n)[2:], []).append(n)
    survivors: list[NodeFacts] = []
    for members in groups.values():
        members.sort(key=lambda n: (n.hourly_cost, n.latency_ms, n.name))
        best_latency, best_cost = math.inf, math.inf
        for n in members:
            if n.latency_ms < best_latency:
                survivors.append(n)
                best_latency, best_cost = n.latency_ms, n.hourly_cost
            elif n.latency_ms == best_latency and n.hourly_cost == best_cost:
                survivors.append(n)  # identical: neither dominates
    if len(survivors) <= 1:
        return survivors
    a = np.array([_attributes(n) for n in survivors], dtype=np.float64)
    keep = np.ones(len(survivors), dtype=bool)
    for i in range(len(survivors)):
        le = np.all(a <= a[i], axis=1)
        lt = np.any(a < a[i], axis=1)
        keep[i] = not np.any(le & lt)
    return [n for n, k in zip(survivors, keep, strict=True) if k]


def shortlist_indices(grid: _Grid) -> list[int]:
    """:func:`shortlist` over a grid's feasible nodes, as indices into the grid's arrays."""
    where = {id(grid.node(i)): i for i in range(len(grid.index))}
    return [where[id(n)] for n in shortlist([grid.node(i) for i in range(len(grid.index))])]
