"""Operator settings, read from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from stratos.api.pods import PodOptions


class PodDefaults(PodOptions):
    """The chart's ``stagePods`` value: options for every job's pods, and their security contexts.

    ``pod_security_context`` / ``container_security_context`` replace the operator's built-in restricted
    ones when set (``stratos.kube.podopts``); the built-in ones set no user id, so the image's
    USER applies on plain Kubernetes and OpenShift's restricted-v2 assigns its own.
    """

    pod_security_context: dict[str, Any] | None = Field(None, description="Pod securityContext.")
    container_security_context: dict[str, Any] | None = Field(None, description="Container securityContext.")
    model_stage_resources: dict[str, Any] | None = Field(
        None,
        description="Resources of the stages that load a model (probes, training, evaluation) in place of "
        "the built-in requests; the GPUs the job's node decision asks for are added to them.",
    )
    call_stage_resources: dict[str, Any] | None = Field(
        None,
        description="Resources of the stages that call teachers (teacher evaluation, synthesis, vocabulary "
        "check) in place of the built-in ones.",
    )


def pod_defaults(text: str) -> PodDefaults:
    """``STRATOS_POD_DEFAULTS`` (the chart's stagePods as JSON); the chart's empty strings mean unset."""
    raw = json.loads(text or "{}")
    return PodDefaults.model_validate({k: v for k, v in raw.items() if v not in ("", None)})


@dataclass(frozen=True)
class OperatorConfig:
    metrics_port: int = 8080
    reconcile_interval: float = 1.0
    worker_image: str = "ghcr.io/stratos-io/stratos-worker:0.1.0"
    serving_image: str = "ghcr.io/stratos-io/stratos-serving:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    log_format: str = "text"
    #: PersistentVolumeClaim (in the job's namespace) used when a job sets no spec.storage; "" = none.
    default_claim: str = ""
    pod_defaults: PodDefaults = field(default_factory=PodDefaults)
    #: The namespaces the operator serves (kopf's ``--namespace``); empty = all (``--all-namespaces``).
    #: Its caches of stage Jobs, pods and Deployments watch these (RBAC grants no more).
    watched_namespaces: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, argv: Sequence[str] | None = None) -> OperatorConfig:
        """The settings from the environment; without ``STRATOS_WATCHED_NAMESPACES``, the namespaces are
        those of the ``kopf run`` command line (``argv``, default ``sys.argv``) that started the operator."""
        env = os.environ
        return cls(
            metrics_port=int(env.get("STRATOS_METRICS_PORT", cls.metrics_port)),
            reconcile_interval=float(env.get("STRATOS_RECONCILE_INTERVAL", cls.reconcile_interval)),
            worker_image=env.get("STRATOS_WORKER_IMAGE", cls.worker_image),
            serving_image=env.get("STRATOS_SERVING_IMAGE", cls.serving_image),
            image_pull_policy=env.get("STRATOS_IMAGE_PULL_POLICY", cls.image_pull_policy),
            log_format=env.get("STRATOS_LOG_FORMAT", cls.log_format),
            default_claim=env.get("STRATOS_DEFAULT_CLAIM", cls.default_claim),
            pod_defaults=pod_defaults(env.get("STRATOS_POD_DEFAULTS", "")),
            watched_namespaces=tuple(
                ns.strip() for ns in env.get("STRATOS_WATCHED_NAMESPACES", "").split(",") if ns.strip()
            )
            or kopf_namespaces(sys.argv if argv is None else argv, env),
        )


def kopf_namespaces(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    """The namespaces a ``kopf run`` command line serves (``-n``/``--namespace``, and kopf's own
    ``KOPF_RUN_NAMESPACE``); empty for any other command line, for ``--all-namespaces``, and when one is a
    pattern (``team-*``, ``!kube-system``): the operator's caches then watch every namespace.

    So an operator started by hand as ``kopf run -m stratos.controller.operator --namespace team-a`` lists
    and watches its children in ``team-a``, which is all its RBAC may allow, instead of being refused
    cluster-wide.
    """
    if len(argv) < 2 or not _is_kopf(argv[0]) or argv[1] != "run":
        return ()
    import click
    from kopf import cli  # kopf's own command line, parsed as kopf parses it (only here: kopf is running)

    try:
        params = cli.run.make_context("run", list(argv[2:]), resilient_parsing=True).params
    except click.ClickException:
        return ()
    found = list(params.get("namespaces") or ())
    if env.get("KOPF_RUN_NAMESPACE"):
        found.append(env["KOPF_RUN_NAMESPACE"])
    if any(not ns or any(ch in ns for ch in "*?[!") for ns in found):
        return ()
    return tuple(dict.fromkeys(found))


def _is_kopf(program: str) -> bool:
    """Whether ``sys.argv[0]`` is kopf's: its ``kopf`` script, or ``python -m kopf`` (whose argv[0] is
    kopf's ``__main__.py``)."""
    path = Path(program)
    return path.name == "kopf" or (path.name == "__main__.py" and path.parent.name == "kopf")
