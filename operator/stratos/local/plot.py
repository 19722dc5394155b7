"""A picture of the server decision: candidate nodes on the cost/latency plane with the Pareto grid.

Plain SVG, no plotting library: the operator image and the base install stay small. Grid lines cut
the feasible nodes' cost and latency ranges into K intervals each (the hardware axis is shown as
point size); Pareto-front cells are orange, the chosen node red, infeasible nodes grey.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from stratos.decide.nodes import NodeFacts
from stratos.decide.servers import ServerChoice

WIDTH, HEIGHT, MARGIN = 860, 540, 70


def plan_svg(
    candidates: Sequence[NodeFacts],
    choice: ServerChoice,
    *,
    title: str,
    pair: tuple[str, str] | None = None,
) -> str:
    """``choice`` must come from select_server with runners_up >= len(candidates) (every feasible node).

    ``pair`` (node, student): the joint rule's choice; that node is drawn as the chosen one, labelled
    with the student, and the grid's own pick keeps its Pareto colour.
    """
    ranked = [(r.facts, r.cell) for r in choice.runners_up]
    if choice.chosen is not None and choice.cell is not None:
        ranked.insert(0, (choice.chosen, choice.cell))
    feasible = {facts.name for facts, _ in ranked}
    pareto = set(choice.pareto_cells)
    # The axes span the feasible nodes (the grid's own range); infeasible ones outside it sit on the edge.
    shown = [f for f, _ in ranked] or list(candidates)
    xs = [n.hourly_cost for n in shown] or [0.0, 1.0]
    ys = [n.latency_ms for n in shown] or [0.0, 1.0]
    x0, x1 = _padded(min(xs), max(xs))
    y0, y1 = _padded(min(ys), max(ys))
    hw = [n.hardware for n in candidates] or [1.0]
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def px(cost: float) -> float:
        return MARGIN + min(max((cost - x0) / (x1 - x0), 0.0), 1.0) * inner_w

    def py(latency: float) -> float:
        return HEIGHT - MARGIN - min(max((latency - y0) / (y1 - y0), 0.0), 1.0) * inner_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<text x="{WIDTH / 2}" y="40" text-anchor="middle">K = {choice.grid_size} intervals per objective '
        f"(cost window {choice.cost_window:g} USD/h); "
        f"{choice.feasible} feasible of {choice.candidates}</text>",
    ]
    if ranked and choice.grid_size:
        fx = [f.hourly_cost for f, _ in ranked]
        fy = [f.latency_ms for f, _ in ranked]
        k = min(choice.grid_size, 60)  # beyond 60 lines the grid is only ink
        for i in range(k + 1):
            cx = px(min(fx) + (max(fx) - min(fx)) * i / k)
            cy = py(min(fy) + (max(fy) - min(fy)) * i / k)
            out.append(_line(cx, py(min(fy)), cx, py(max(fy)), "#ddd"))
            out.append(_line(px(min(fx)), cy, px(max(fx)), cy, "#ddd"))
    out += [
        _line(MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN, HEIGHT - MARGIN, "black"),
        _line(MARGIN, MARGIN, MARGIN, HEIGHT - MARGIN, "black"),
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 30}" text-anchor="middle">hourly cost (USD) — '
        f"{x0:.2f} to {x1:.2f} (beyond: on the edge)</text>",
        f'<text x="20" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 20 {HEIGHT / 2})">'
        f"latency (ms) — {y0:.3g} to {y1:.3g}</text>",
    ]
    cells = dict((f.name, cell) for f, cell in ranked)
    for node in sorted(candidates, key=lambda n: n.name):
        radius = 4 + 8 * (node.hardware - min(hw)) / ((max(hw) - min(hw)) or 1)
        if pair is not None and node.name == pair[0]:
            colour, label = "#d62728", f"{node.name} (chosen with {pair[1]})"
        elif pair is None and choice.chosen is not None and node.name == choice.chosen.name:
            colour, label = "#d62728", f"{node.name} (chosen)"
        elif node.name not in feasible:
            colour, label = "#bbbbbb", node.name
        elif cells.get(node.name) in pareto:
            colour, label = "#ff7f0e", node.name
        else:
            colour, label = "#1f77b4", node.name
        x, y = px(node.hourly_cost), py(node.latency_ms)
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{colour}" fill-opacity="0.8"/>')
        out.append(f'<text x="{x + radius + 2:.1f}" y="{y + 4:.1f}">{escape(label)}</text>')
    legend = (("#d62728", "chosen"), ("#ff7f0e", "Pareto-front cell"), ("#1f77b4", "dominated cell"),
              ("#bbbbbb", "infeasible (hard constraints)"))  # fmt: skip
    for i, (colour, text) in enumerate(legend):  # one row under the plot
        x = 20 + 150 * i
        out.append(f'<circle cx="{x}" cy="{HEIGHT - 10}" r="5" fill="{colour}"/>')
        out.append(f'<text x="{x + 9}" y="{HEIGHT - 6}">{escape(text)}</text>')
    out.append(f'<text x="{20 + 150 * 4 + 40}" y="{HEIGHT - 6}">size: GPUs × BF16 TFLOPS</text>')
    out.append("</svg>")
    return "\n".join(out)


def _padded(low: float, high: float) -> tuple[float, float]:
    span = high - low or max(abs(high), 1.0)
    return low - 0.08 * span, high + 0.08 * span


def _line(x1: float, y1: float, x2: float, y2: float, colour: str) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"/>'
