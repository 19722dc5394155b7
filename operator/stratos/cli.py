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
    return jobs[0]


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def validate(job: Annotated[Path, typer.Argument(help="DistillationJob YAML file")]) -> None:
    """Check a DistillationJob against the API models (the same rules the CRD enforces)."""
    from stratos.api.spec import DistillationJobSpec

    body = load_job(job)
    try:
        DistillationJobSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        for e in err.errors():
            loc = ".".join(str(p) for p in ("spec", *e["loc"]))
            typer.echo(f"{loc}: {e['msg']}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{job}: valid")


@app.command()
def plan(
    job: Annotated[Path, typer.Argument(help="DistillationJob YAML file")],
    nodes: Annotated[Path, typer.Option("--nodes", help="YAML file of Node objects (the inventory)")],
    output: Annotated[str, typer.Option("-o", "--output", help="text, yaml or json")] = "text",
) -> None:
    """The decisions that need no workloads: server selection over an inventory of nodes."""
    from stratos.controller.machine import reconcile

    body = load_job(job)
    body.setdefault("metadata", {}).setdefault("name", job.stem)
    body["metadata"].setdefault("namespace", "default")
    body["metadata"].setdefault("uid", "local")
    inventory = [d for d in load_documents(nodes) if isinstance(d, dict) and d.get("kind") == "Node"]
    outcome = reconcile(body, nodes=inventory, executor=None)
    status = outcome.status
    if output == "json":
        json.dump(status, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif output == "yaml":
        yaml.safe_dump(status, sys.stdout, sort_keys=False)
    else:
        from stratos.local.summary import print_summary

        print_summary(status)
    if status.get("phase") == "Failed":
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
