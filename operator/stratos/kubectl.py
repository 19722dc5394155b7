"""``kubectl stratos``: DistillationJobs on a live cluster, shown the way ``stratos run`` shows them.

Installed with the package as the ``kubectl-stratos`` command; kubectl runs any ``kubectl-<name>``
on PATH as ``kubectl <name>``. It reads the cluster with the current kubeconfig (``$KUBECONFIG``,
``--kubeconfig``, ``--context``) and needs only read access:

- ``kubectl stratos get [JOB]``: every job in the namespace as a table, or one job's decisions
  (servers, teachers, students with reasons, the pair table, cost) as ``stratos run`` prints them.
- ``kubectl stratos describe JOB``: the same plus the spec in brief and the job's recent Events.
- ``kubectl stratos logs JOB --stage train``: the log of the stage's newest pod (``--candidate``
  picks one of several student or teacher pods); the pod's result when its log cannot be read.
- ``kubectl stratos plan FILE``: server selection for a job file over the live cluster's Nodes,
  without creating anything.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from stratos import GROUP, PLURAL, VERSION
from stratos.kube.naming import LABEL_CANDIDATE, LABEL_JOB, LABEL_STAGE

app = typer.Typer(
    name="kubectl-stratos",
    add_completion=False,
    no_args_is_help=True,
    help="kubectl plugin for Stratos DistillationJobs: get, describe, logs, plan.",
)

NamespaceOption = Annotated[
    str | None, typer.Option("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
]
KubeconfigOption = Annotated[str | None, typer.Option("--kubeconfig", help="kubeconfig file")]
ContextOption = Annotated[str | None, typer.Option("--context", help="kubeconfig context")]
OutputOption = Annotated[str, typer.Option("-o", "--output", help="text, yaml or json")]


class Cluster:
    """The API client and default namespace from a kubeconfig (or the in-cluster config)."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        from kubernetes import client, config

        self.namespace = namespace or "default"
        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
            if namespace is None:
                _, active = config.list_kube_config_contexts(config_file=kubeconfig)
                chosen = active
                if context:
                    contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
                    chosen = next((c for c in contexts if c["name"] == context), active)
                self.namespace = str((chosen or {}).get("context", {}).get("namespace") or "default")
        except config.ConfigException:
            config.load_incluster_config()
        self.api = client.ApiClient()

    def get(self, path: str, **query: Any) -> Any:
        """One GET returning plain API JSON (camelCase, as kubectl shows it)."""
        from kubernetes.client.exceptions import ApiException

        params = [(k, v) for k, v in query.items() if v is not None]
        _, url, headers, _, _ = self.api.param_serialize(
            "GET",
            path,
            query_params=params or None,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.rest_client.request("GET", url, headers=headers, _request_timeout=60)
        raw = response.read()
        text = raw.decode("utf-8", errors="replace") if raw else ""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(text) if text else None

    def jobs_path(self, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{path}/{name}" if name else path


def _cluster(kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
    from kubernetes.client.exceptions import ApiException

    try:
        return Cluster(kubeconfig, context, namespace)
    except (ApiException, OSError, ValueError) as err:
        typer.echo(f"error: cannot load the cluster configuration: {err}", err=True)
        raise typer.Exit(1) from None


def _fetch(cluster: Cluster, path: str, what: str, **query: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return cluster.get(path, **query)
    except ApiException as err:
        if err.status == 404:
            typer.echo(f"error: {what} not found", err=True)
        else:
            typer.echo(f"error: reading {what}: {err.status} {err.reason}", err=True)
        raise typer.Exit(1) from None


# ---------------------------------------------------------------------------------- pure helpers


def job_row(dj: Mapping[str, Any]) -> list[str]:
    """One line of ``kubectl stratos get``: name, phase, stage, node, teacher, student, accuracy, endpoint."""
    status = dj.get("status") or {}
    evaluation = status.get("evaluation") or {}
    accuracy = evaluation.get("accuracy")
    endpoint = status.get("endpoint") or {}
    return [
        str(dj["metadata"]["name"]),
        str(status.get("phase") or "Pending"),
        str(status.get("stage") or ""),
        str((status.get("server") or {}).get("node") or "-"),
        str((status.get("teacher") or {}).get("selected") or "-"),
        str((status.get("student") or {}).get("selected") or "-"),
        f"{accuracy:.1%}" if isinstance(accuracy, int | float) else "-",
        str(endpoint.get("externalUrl") or endpoint.get("url") or "-"),
    ]


JOB_COLUMNS = ["NAME", "PHASE", "STAGE", "NODE", "TEACHER", "STUDENT", "ACCURACY", "ENDPOINT"]


def pick_pod(
    pods: Iterable[Mapping[str, Any]], stage: str, candidate: str | None
) -> tuple[Mapping[str, Any] | None, str]:
    """The newest pod of ``stage`` (of ``candidate`` if given), or None and why there is none."""
    mine = [p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_STAGE) == stage]
    candidates = sorted(
        {str((p["metadata"].get("labels") or {}).get(LABEL_CANDIDATE, "")) for p in mine} - {""}
    )
    if candidate is not None:
        mine = [p for p in mine if (p["metadata"].get("labels") or {}).get(LABEL_CANDIDATE) == candidate]
    elif len(candidates) > 1:
        return (
            None,
            f"stage {stage} ran for several candidates ({', '.join(candidates)}): pick one with --candidate",
        )
    if not mine:
        which = f" for candidate {candidate}" if candidate else ""
        return None, f"no pod of stage {stage}{which}" + (
            f" (candidates: {', '.join(candidates)})" if candidates else ""
        )
    mine.sort(key=lambda p: (str(p["metadata"].get("creationTimestamp", "")), str(p["metadata"]["name"])))
    return mine[-1], ""


def termination_message(pod: Mapping[str, Any]) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        if term.get("message"):
            return str(term["message"])
    return ""


def describe_spec(dj: Mapping[str, Any]) -> list[str]:
    """The spec in brief: what describe prints above the decisions."""
    spec = dj.get("spec") or {}
    serving = spec.get("serving") or {}
    teachers = ", ".join(str(t.get("name")) for t in spec.get("teachers") or [])
    students = ", ".join(str(s.get("name")) for s in spec.get("students") or [])
    lines = [
        f"Task:      {(spec.get('task') or {}).get('builtin', 'mahjong')}",
        f"Teachers:  {teachers}",
        f"Students:  {students}",
        f"Queue:     {spec.get('queueName') or '-'}",
        f"Suspend:   {bool(spec.get('suspend'))}",
        f"Serving:   {'on' if serving.get('enabled', True) else 'off'} ({serving.get('engine', 'vllm')})",
    ]
    return lines


# -------------------------------------------------------------------------------------- commands


def _emit(value: Any, output: str) -> bool:
    if output == "json":
        json.dump(value, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return True
    if output == "yaml":
        yaml.safe_dump(value, sys.stdout, sort_keys=False)
        return True
    if output != "text":
        typer.echo(f"error: unknown output format {output!r} (text, yaml, json)", err=True)
        raise typer.Exit(2)
    return False


def _print_table(rows: list[list[str]], columns: list[str]) -> None:
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        typer.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command()
def get(
    job: Annotated[str | None, typer.Argument(help="DistillationJob name; none: list them all")] = None,
    namespace: NamespaceOption = None,
    output: OutputOption = "text",
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """List the namespace's DistillationJobs, or print one job's decisions as `stratos run` does."""
    cluster = _cluster(kubeconfig, context, namespace)
    if job is None:
        items = _fetch(cluster, cluster.jobs_path(), "DistillationJobs")["items"]
        if _emit(items, output):
            return
        if not items:
            typer.echo(f"No DistillationJobs in namespace {cluster.namespace}.", err=True)
            return
        _print_table([job_row(i) for i in sorted(items, key=lambda i: i["metadata"]["name"])], JOB_COLUMNS)
        return
    dj = _fetch(cluster, cluster.jobs_path(job), f"DistillationJob {cluster.namespace}/{job}")
    if _emit(dj.get("status") or {}, output):
        return
    from stratos.local.summary import print_summary

    print_summary(dj.get("status") or {})


@app.command()
def describe(
    job: Annotated[str, typer.Argument(help="DistillationJob name")],
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """The job's spec in brief, every decision with its reasons, and its recent Events."""
    from rich.console import Console

    from stratos.local.summary import print_summary

    cluster = _cluster(kubeconfig, context, namespace)
    dj = _fetch(cluster, cluster.jobs_path(job), f"DistillationJob {cluster.namespace}/{job}")
    meta = dj["metadata"]
    console = Console()
    console.print(f"[bold]Name[/bold]:      {meta['name']}")
    console.print(f"[bold]Namespace[/bold]: {meta['namespace']}")
    console.print(
        f"[bold]Created[/bold]:   {meta.get('creationTimestamp')}   generation {meta.get('generation')}, "
        f"observed {(dj.get('status') or {}).get('observedGeneration', '-')}"
    )
    for line in describe_spec(dj):
        console.print(line, highlight=False)
    console.print()
    print_summary(dj.get("status") or {}, console)
    events = _fetch(
        cluster,
        f"/api/v1/namespaces/{cluster.namespace}/events",
        "events",
        fieldSelector=f"involvedObject.name={job},involvedObject.uid={meta.get('uid')}",
    )["items"]
    events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    console.print("\n[bold]Events[/bold]:" + ("" if events else " none"))
    for event in events[-20:]:
        when = event.get("lastTimestamp") or event.get("eventTime") or ""
        count = int(event.get("count") or 1)
        times = f" (x{count})" if count > 1 else ""
        console.print(
            f"  {when}  {event.get('type')}  {event.get('reason')}{times}: {event.get('message')}",
            highlight=False,
        )


@app.command()
def logs(
    job: Annotated[str, typer.Argument(help="DistillationJob name")],
    stage: Annotated[
        str,
        typer.Option(
            "--stage", help="teacher-eval, student-probe, synthesize, train or evaluate (default: train)"
        ),
    ] = "train",
    candidate: Annotated[
        str | None, typer.Option("--candidate", help="teacher or student, when the stage ran for several")
    ] = None,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="stream the log")] = False,
    tail: Annotated[int | None, typer.Option("--tail", help="last N lines only")] = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """The log of a stage's newest pod (e.g. --stage train)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    cluster = _cluster(kubeconfig, context, namespace)
    pods = _fetch(
        cluster,
        f"/api/v1/namespaces/{cluster.namespace}/pods",
        "pods",
        labelSelector=f"{LABEL_JOB}={job}",
    )["items"]
    pod, why = pick_pod(pods, stage, candidate)
    if pod is None:
        typer.echo(f"error: job {job}: {why}", err=True)
        raise typer.Exit(1)
    name = str(pod["metadata"]["name"])
    typer.echo(f"pod {cluster.namespace}/{name} ({pod.get('status', {}).get('phase', 'Pending')})", err=True)
    core = client.CoreV1Api(cluster.api)
    try:
        if follow:
            stream = core.read_namespaced_pod_log(
                name, cluster.namespace, follow=True, tail_lines=tail, _preload_content=False
            )
            for chunk in stream.stream():  # type: ignore[attr-defined]
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
            return
        text = core.read_namespaced_pod_log(name, cluster.namespace, tail_lines=tail, _request_timeout=60)
    except ApiException as err:
        detail = ""
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            detail = str(json.loads(err.body or "{}").get("message", ""))
        typer.echo(f"error: the log of pod {name} cannot be read: {detail or err.reason}", err=True)
        result = termination_message(pod)
        if result:
            typer.echo(f"its result (termination message):\n{result}")
            return
        raise typer.Exit(1) from None
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")


@app.command()
def plan(
    file: Annotated[Path, typer.Argument(help="DistillationJob YAML file")],
    output: OutputOption = "text",
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Server selection for a job file over the live cluster's Nodes; creates nothing."""
    from stratos.cli import emit, load_job
    from stratos.pipeline.machine import reconcile

    body = load_job(file)
    cluster = _cluster(kubeconfig, context, namespace)
    nodes = _fetch(cluster, "/api/v1/nodes", "nodes")["items"]
    body["metadata"].setdefault("namespace", cluster.namespace)
    body["metadata"].setdefault("uid", "plan")
    outcome = reconcile(body, nodes=nodes, executor=None)
    if output == "text":
        typer.echo(f"{len(nodes)} nodes in the cluster", err=True)
    emit(outcome.status, output)
    if outcome.status.get("phase") == "Failed":
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
