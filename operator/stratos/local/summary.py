"""Human-readable summary of a job's status: every decision and why, as ``kubectl describe`` would."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table


def print_summary(status: Mapping[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]Phase[/bold]: {status.get('phase')}   [bold]Stage[/bold]: {status.get('stage')}")
    if status.get("message"):
        console.print(f"  {status['message']}")
    for cond in status.get("conditions", []):
        console.print(f"  {cond['type']}={cond['status']} ({cond['reason']}): {cond['message']}")
    server = status.get("server")
    if server and not server.get("node"):  # servers.rule joint, before the student stage
        console.print(f"\n[bold]Server[/bold]: not chosen yet — {server.get('reason')}")
    elif server:
        console.print(
            f"\n[bold]Server[/bold]: {server['node']}  {server['gpu']['count']}x {server['gpu']['model']}  "
            f"${server['hourlyCost']:.2f}/h  {server['latencyMs']:g} ms  grid K={server['gridSize']} "
            f"cell={server['cell']}  ({server['feasible']} feasible of {server['candidates']} candidates)"
        )
        table = Table("runner-up", "GPU", "$/h", "ms", "cell", "why it lost")
        for r in server.get("runnersUp", []):
            table.add_row(
                r["node"],
                f"{r['gpu']['count']}x {r['gpu']['model']}",
                f"{r['hourlyCost']:.2f}",
                f"{r['latencyMs']:g}",
                str(r["cell"]),
                r["reason"],
            )
        if server.get("runnersUp"):
            console.print(table)
        if server.get("rejected"):
            console.print("  rejected: " + ", ".join(f"{k}: {v}" for k, v in server["rejected"].items()))
    print_decisions(status, console)


def print_decisions(status: Mapping[str, Any], console: Console) -> None:
    """Teacher, strategy, student, data, training, evaluation and endpoint blocks, then the headline."""
    teacher = status.get("teacher")
    if teacher:
        console.print(f"\n[bold]Teacher[/bold]: {teacher.get('selected')} — {teacher.get('reason')}")
        table = Table("teacher", "accuracy", "cost USD", "verdict")
        for t in teacher.get("candidates", []):
            table.add_row(
                t["name"], _pct(t.get("accuracy")), f"{t.get('costUsd', 0):.4f}", t.get("verdict", "")
            )
        console.print(table)
    strategy = status.get("strategy")
    if strategy:
        console.print(
            f"[bold]Strategy[/bold]: {strategy['selected']} with {strategy['algorithm']} — "
            f"{strategy['reason']}"
        )
    student = status.get("student")
    if student:
        console.print(f"[bold]Student[/bold]: {student.get('selected')} — {student.get('reason')}")
        table = Table("student", "a", "t (h)", "r (tok/s)", "M", "verdict")
        for s in student.get("candidates", []):
            score = f"{s['score']:.2f}" if s.get("score") is not None else "-"
            table.add_row(
                s["name"], _pct(s.get("accuracy")), f"{s.get('trainingTimeHours') or 0:.3g}",
                f"{s.get('tokensPerSecond') or 0:.3g}", score, s.get("verdict", ""),
            )  # fmt: skip
        console.print(table)
        pair = student.get("pair") or {}
        if pair.get("costBreakdown"):
            console.print(f"  expected cost: {pair['costBreakdown']}")
        if pair.get("runnersUp"):
            runners = Table("runner-up node", "student", "U", "expected $", "why it lost")
            for r in pair["runnersUp"]:
                runners.add_row(
                    r["node"], r["student"], f"{r.get('utility') or 0:.3f}",
                    f"{r.get('expectedCostUsd') or 0:.2f}", r.get("reason") or "",
                )  # fmt: skip
            console.print(runners)
        if pair.get("fallback"):
            console.print(f"  {pair['fallback']}")
    data, training, evaluation = status.get("data"), status.get("training"), status.get("evaluation")
    if data:
        console.print(
            f"[bold]Data[/bold]: {data.get('samples')} examples ({data.get('real')} real, "
            f"{data.get('synthetic')} synthetic, {data.get('rejected')} rejected) at {data.get('uri')}"
        )
    if training:
        console.print(
            f"[bold]Training[/bold]: {training.get('student')} with {training.get('algorithm')}, "
            f"{training.get('steps')} steps, final loss {training.get('loss')}, "
            f"adapter {training.get('adapterUri')}"
        )
    endpoint = status.get("endpoint")
    if endpoint:
        console.print(
            f"[bold]Endpoint[/bold]: {endpoint.get('url')} model {endpoint.get('model')} "
            f"({endpoint.get('engine')}; {endpoint.get('latencyMs')} ms, "
            f"{endpoint.get('tokensPerSecond')} tokens/s)"
        )
    if evaluation and teacher:
        chosen: Mapping[str, Any] = next(
            (t for t in teacher.get("candidates", []) if t["name"] == teacher.get("selected")), {}
        )
        console.print(
            f"\n[bold]Student {evaluation.get('student')}: {_pct(evaluation.get('accuracy'))} on "
            f"{evaluation.get('samples')} held-out samples; teacher {teacher.get('selected')}: "
            f"{_pct(chosen.get('accuracy'))} on its probe sample.[/bold]"
        )


def _pct(value: Any) -> str:
    return f"{float(value):.1%}" if isinstance(value, int | float) else "-"
