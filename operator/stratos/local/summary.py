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
    if server:
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
