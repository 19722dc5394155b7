"""Stage SelectServer: gather node facts, run the Pareto-Front-Grid selection, record the decision.

With ``servers.rule: paper`` the grid's node is the server. With ``servers.rule: joint`` (default) this
stage records the grid (K, cells, feasible and rejected counts) and the shortlist of nodes in Pareto-front
cells, leaving ServerSelected Unknown ("Shortlisted"): SelectStudent probes the students and then chooses
node and student together (:mod:`stratos.decide.joint`), completing ``status.server``.
"""

from __future__ import annotations

from time import perf_counter

from stratos.api.status import GPUInfo, ServerCandidate, ServerDecision
from stratos.decide.nodes import NodeFacts, gather_candidates
from stratos.decide.placement import gather_options, server_choice
from stratos.decide.servers import ServerChoice
from stratos.pipeline import conditions as c
from stratos.pipeline.context import Context, Event
from stratos.pipeline.stages import Stage

# A vanishing cost window can make thousands of Pareto cells; status keeps the first ones (sorted).
MAX_PARETO_CELLS = 64


def select_server_step(ctx: Context) -> Stage | None:
    if ctx.decided("server", "node", c.SERVER_SELECTED):
        return Stage.EVALUATE_TEACHERS  # decided before (e.g. by an operator that has since restarted)
    choice = decide_server(ctx)
    if choice.chosen is None:
        ctx.status.server = None
        ctx.condition(c.SERVER_SELECTED, c.FALSE, "NoFeasibleNode", choice.reason, event="Warning")
        return None  # tried again on every tick, so a node that appears or changes is picked up
    block = server_block(choice, ctx.spec.servers.cost_window)
    if ctx.spec.servers.rule == "joint":
        # The grid without a node: SelectStudent chooses the node with the student.
        shortlist = {k: v for k, v in block.to_api().items() if k not in _CHOSEN_NODE_KEYS}
        ctx.status.server = ServerDecision.read({**shortlist, "reason": shortlist_reason(choice)})
        ctx.condition(c.SERVER_SELECTED, c.UNKNOWN, "Shortlisted", shortlist_reason(choice))
        return Stage.EVALUATE_TEACHERS
    ctx.status.server = block
    ctx.condition(c.SERVER_SELECTED, c.TRUE, "NodeSelected", describe(choice.chosen, choice), event="Normal")
    return Stage.EVALUATE_TEACHERS


#: The keys of ``status.server`` that describe the chosen node (absent while only shortlisted).
_CHOSEN_NODE_KEYS = frozenset({"node", "gpu", "hourlyCost", "latencyMs", "region", "cell", "runnersUp"})


def shortlist_reason(choice: ServerChoice) -> str:
    return (
        f"{len(choice.front)} of {choice.feasible} feasible node(s) are not dominated in cost, latency, "
        f"compute, GPU memory and bandwidth (the grid has K={choice.grid_size} and "
        f"{len(choice.pareto_cells)} Pareto-front cell(s)); the node is chosen together with the student "
        f"after the probes (servers.rule joint); {choice.candidates} candidate(s)"
        + (
            f", rejected: {', '.join(f'{v} {k}' for k, v in sorted(choice.rejected.items()))}"
            if choice.rejected
            else ""
        )
    )


def node_lost(ctx: Context) -> str | None:
    """Why the chosen node can no longer take work (gone, cordoned, NotReady, ...), or None if it can."""
    if not ctx.nodes_known:
        return None  # the node list is still loading: absence from it proves nothing yet
    name = ctx.server.node if ctx.server else None
    node = next((n for n in ctx.nodes if (n.get("metadata") or {}).get("name") == name), None)
    if node is None:
        return f"node {name} no longer exists"
    candidates, rejected = gather_candidates([node], **gather_options(ctx.spec))
    if candidates:
        return None
    return f"node {name} is no longer a candidate: {', '.join(sorted(rejected))}"


def reselect_server(ctx: Context, why: str) -> Stage:
    """Forget the node and the student decision that depended on it; select both again.

    Teacher, strategy and data do not depend on the node and are kept; finished probe Jobs are found
    again by name, so their results are reused rather than recomputed.
    """
    ctx.status.server = ctx.status.student = ctx.status.training = None
    for ctype in (c.SERVER_SELECTED, c.STUDENT_SELECTED, c.TRAINED):
        ctx.status.remove_condition(ctype)
    ctx.events.append(Event("Warning", "NodeLost", f"{why}: selecting a server again"))
    return Stage.SELECT_SERVER


def decide_server(ctx: Context) -> ServerChoice:
    started = perf_counter()
    _, choice = server_choice(ctx.spec, ctx.nodes)
    ctx.timings["server"] = perf_counter() - started
    return choice


def describe(node: NodeFacts, choice: ServerChoice) -> str:
    latency = f"{node.latency_ms:g} ms" if node.latency_known else "latency unknown"
    gpus = f"{node.gpu_count}x {node.gpu.name}"
    return f"node {node.name} ({gpus}, ${node.hourly_cost:.2f}/h, {latency}): {choice.reason}"


def _gpu(node: NodeFacts) -> GPUInfo:
    return GPUInfo(model=node.gpu.name, count=node.gpu_count, memory_gib=round(node.gpu_memory_gib, 2))


def server_block(choice: ServerChoice, cost_window: float) -> ServerDecision:
    """The ``status.server`` block: winner, grid, runners-up and rejection counts."""
    node = choice.chosen
    assert node is not None
    return ServerDecision(
        node=node.name,
        gpu=_gpu(node),
        hourly_cost=node.hourly_cost,
        latency_ms=node.latency_ms,
        region=node.region,
        grid_size=choice.grid_size,
        cost_window=cost_window,
        cell=list(choice.cell or ()),
        pareto_cells=[list(cell) for cell in choice.pareto_cells[:MAX_PARETO_CELLS]],
        runners_up=[
            ServerCandidate(
                node=r.facts.name,
                gpu=_gpu(r.facts),
                hourly_cost=r.facts.hourly_cost,
                latency_ms=r.facts.latency_ms,
                cell=list(r.cell),
                distance=round(r.distance, 4),
                reason=r.reason,
            )
            for r in choice.runners_up
        ],
        candidates=choice.candidates,
        feasible=choice.feasible,
        rejected=dict(sorted(choice.rejected.items())),
        reason=choice.reason,
    )
