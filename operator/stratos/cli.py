"""The ``stratos`` command: validate a job, plan its decisions, run it locally."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from stratos import KIND, __version__
from stratos.local.teacher import DEFAULT_ACCURACY

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Stratos: LLM distillation on Kubernetes.")


def load_documents(path: Path) -> list[dict[str, Any]]:
    """YAML documents of a file; a ``kind: List`` is flattened into its items."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except (OSError, yaml.YAMLError) as err:
        raise typer.BadParameter(f"cannot read {path}: {err}") from err
    out: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            out.extend(doc.get("items") or [])
        elif isinstance(doc, list):
            out.extend(doc)
        else:
            out.append(doc)
    return out


def load_job(path: Path) -> dict[str, Any]:
    jobs = [d for d in load_documents(path) if isinstance(d, dict) and d.get("kind") == KIND]
    if len(jobs) != 1:
        raise typer.BadParameter(f"{path} must hold exactly one {KIND}, found {len(jobs)}")
    jobs[0].setdefault("metadata", {}).setdefault("name", path.stem)
    return jobs[0]


NodesOption = Annotated[
    Path | None,
    typer.Option("--nodes", help="YAML file of Node objects (default: an inventory in the paper's GPU mix)"),
]
OutputOption = Annotated[str, typer.Option("-o", "--output", help="text, yaml or json")]


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def validate(job: Annotated[Path, typer.Argument(help="DistillationJob YAML file")]) -> None:
    """Check a DistillationJob against the API models (the same rules the CRD enforces)."""
    from stratos.api.base import format_errors
    from stratos.api.spec import DistillationJobSpec

    body = load_job(job)
    try:
        DistillationJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        typer.echo(format_errors(err, "spec"), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{job}: valid")


@app.command()
def plan(
    job: Annotated[Path, typer.Argument(help="DistillationJob YAML file")],
    nodes: NodesOption = None,
    output: OutputOption = "text",
    picture: Annotated[
        Path | None, typer.Option("--picture", help="write the nodes on the cost/latency plane as SVG")
    ] = None,
) -> None:
    """The decisions that need no workloads: server selection over an inventory of nodes.

    With servers.rule joint (default) it also prints the (node, student) pair table the joint choice
    would rank before any probe has run (probe accuracies unknown, so accuracy counts the same for
    every student; teacher synthesis cost unknown) and where each student would be probed.
    """
    from stratos.api.spec import DistillationJobSpec
    from stratos.pipeline.machine import reconcile

    body = load_job(job)
    body["metadata"].setdefault("namespace", "default")
    body["metadata"].setdefault("uid", "local")
    inventory = load_inventory(nodes)
    outcome = reconcile(body, nodes=inventory, executor=None)
    emit(outcome.status, output)
    spec = DistillationJobSpec.model_validate(body.get("spec") or {})
    pair = None
    if spec.servers.rule == "joint" and outcome.status.get("phase") != "Failed":
        choice = joint_plan(spec, inventory)
        typer.echo(pair_table(choice), err=output != "text")
        if choice.chosen is not None:
            pair = (choice.chosen.node.name, choice.chosen.student)
    if picture is not None:
        write_picture(body, inventory, picture, pair=pair)
    if outcome.status.get("phase") == "Failed":
        raise typer.Exit(1)


def joint_plan(spec: Any, inventory: list[dict[str, Any]]) -> Any:
    """The joint choice before any probe: every student's accuracy counted equal, synthesis unknown."""
    from stratos.decide.joint import probe_plan, select_pair
    from stratos.decide.placement import (
        joint_costs,
        joint_limits,
        joint_student,
        joint_weights,
        probes_usd,
        server_choice,
    )

    # select_server's own default of three runners-up (the plan reads only the front)
    _, server = server_choice(spec, inventory, runners_up=3)
    nodes = list(server.front)
    students = [joint_student(spec, s.name, accuracy=1.0) for s in spec.students]
    where = probe_plan(students, nodes)
    costs = joint_costs(
        spec, synthesis_usd=0.0, teacher_evaluation_usd=0.0, probes=probes_usd(spec, students, where)
    )
    return select_pair(
        students,
        nodes,
        weights=joint_weights(spec),
        costs=costs,
        limits=joint_limits(spec),
        probe_margin=spec.requirements.probe_margin,
        runners_up=spec.servers.runners_up,
        probe_nodes=where,
    )


def pair_table(choice: Any) -> str:
    """The joint choice as text: the ranked pairs and where each student would be probed."""
    lines = [
        "Joint (node, student) choice before the probes (accuracy unknown: counted equal; teacher synthesis "
        f"cost unknown): {choice.feasible_pairs} feasible of {choice.pairs} pairs on {choice.nodes} node(s)"
    ]
    head = ("", "node", "student", "U", "train h", "tok/s", "lat ms", "cost $", "why not")
    rows = []
    if choice.chosen is not None:
        rows.append(("*", *_pair_cells(choice.chosen), "chosen"))
    rows += [(" ", *_pair_cells(r), r.reason) for r in choice.runners_up]
    widths = [max(len(str(r[i])) for r in (head, *rows)) for i in range(len(head) - 1)]
    for r in (head, *rows):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    for v in choice.students:
        # Before the probes every accuracy is a placeholder: say only where it is probed and why it can't win.
        why = v.verdict.split(", but ", 1)[1] if ", but " in v.verdict else v.verdict
        if v.kept and ", but " not in v.verdict:
            why = f"best pair on {v.best_node}, U {v.best_utility:.3f}"
        lines.append(f"probe {v.name}: on {v.probe_node or '-'} ({why})")
    if choice.chosen is None:
        lines.append(f"no pair: {choice.reason}")
    return "\n".join(lines)


def _pair_cells(row: Any) -> tuple[str, ...]:
    return (
        row.node.name,
        row.student,
        f"{row.utility:.3f}",
        f"{row.training_hours:.3g}",
        f"{row.tokens_per_second:.0f}",
        f"{row.latency_ms:.3g}",
        f"{row.cost.total:.2f}",
    )


@app.command()
def run(
    job: Annotated[Path, typer.Argument(help="DistillationJob YAML file")],
    nodes: NodesOption = None,
    output: OutputOption = "text",
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="artifacts and status; default .stratos/<job name>")
    ] = None,
    programmatic_teacher: Annotated[
        bool,
        typer.Option(help="serve the built-in programmatic Mahjong teacher on localhost teacher endpoints"),
    ] = False,
    teacher_accuracy: Annotated[
        float,
        typer.Option(help="share of hands the programmatic teacher solves alone (GPT-4o's 4% in the paper)"),
    ] = DEFAULT_ACCURACY,
    tiny_students: Annotated[
        bool, typer.Option(help="build tiny random-initialised models for missing local student paths")
    ] = False,
) -> None:
    """Run a DistillationJob on this machine: the operator's stage machine, stages as local processes."""
    from rich.console import Console

    from stratos.local.runner import RunOptions, run_local

    body = load_job(job)
    console = Console(stderr=output != "text")
    opts = RunOptions(
        job=body,
        nodes=load_inventory(nodes),
        workdir=(workdir or Path(".stratos") / body["metadata"]["name"]).resolve(),
        programmatic_teacher=programmatic_teacher,
        teacher_accuracy=teacher_accuracy,
        tiny_students=tiny_students,
    )
    status = run_local(opts, console)
    emit(status, output, console)
    if status.get("phase") == "Failed":
        raise typer.Exit(1)


def write_picture(
    body: dict[str, Any], inventory: list[dict[str, Any]], path: Path, *, pair: tuple[str, str] | None = None
) -> None:
    """The server decision as SVG: every candidate, the grid, the Pareto cells and the chosen node (with
    ``pair``, the node of the chosen (node, student) pair, labelled with the student)."""
    from stratos.api.spec import DistillationJobSpec
    from stratos.decide.placement import server_choice
    from stratos.local.plot import plan_svg

    spec = DistillationJobSpec.model_validate(body.get("spec") or {})
    # every candidate ranked, so the picture can mark each
    candidates, choice = server_choice(spec, inventory, runners_up=len(inventory))
    title = f"Server selection for {body['metadata']['name']}"
    path.write_text(plan_svg(candidates, choice, title=title, pair=pair))
    typer.echo(f"wrote {path}", err=True)


def load_inventory(path: Path | None) -> list[dict[str, Any]]:
    from stratos.local.runner import default_inventory

    docs = load_documents(path or default_inventory())
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "Node"]


def emit(status: dict[str, Any], output: str, console: Any = None) -> None:
    if output == "json":
        json.dump(status, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif output == "yaml":
        yaml.safe_dump(status, sys.stdout, sort_keys=False)
    else:
        from stratos.local.summary import print_summary

        print_summary(status, console)


if __name__ == "__main__":  # pragma: no cover
    app()
