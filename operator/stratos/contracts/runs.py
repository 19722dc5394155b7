"""What the stage machine asks an executor for, and what it reads back.

A ``StageRun`` names one stage program and its config; an executor (Kubernetes Jobs in the operator,
local processes in ``stratos run``) starts it once and reports a ``RunStatus`` carrying the program's
JSON result. ``EndpointRequest``/``EndpointState``/``ProbeOutcome`` are the same for the serving
endpoint. ``STORAGE_DIR`` is where a stage program finds the job's storage in its pod. This module is
data only: it imports nothing of the operator, so the machine above it and the builders of child
objects below the machine can share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

#: Where the job's storage (its PersistentVolumeClaim) is mounted in stage and serving pods.
STORAGE_DIR = "/var/lib/stratos"


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable filled from a Secret by the kubelet; the operator never reads it."""

    env: str
    secret: str
    key: str


@dataclass(frozen=True)
class StageRun:
    """A request to run one stage program (``python -m <program> --config ...``) to completion."""

    stage: str
    program: str
    config: Mapping[str, Any]
    candidate: str | None = None
    node: str | None = None
    gpus: int = 0
    secret_env: tuple[SecretEnv, ...] = ()


@dataclass(frozen=True)
class RunStatus:
    state: Literal["Pending", "Running", "Succeeded", "Failed"]
    result: Mapping[str, Any] | None = None
    message: str = ""
    # Elapsed time of every attempt (pod) of the run so far, failed and retried ones included, and how
    # many attempts there were: what node time is charged for.
    seconds: float = 0.0
    attempts: int = 0
    # Which run this is (a Job's uid; a local run's own id): a different id for the same stage and
    # candidate means the run seen before is gone. None where the executor cannot tell.
    run_id: str | None = None
    # When its first attempt started, and when its last one ended (None while one runs).
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # The JSON object each attempt reported, oldest first, failed attempts' too (a program's failure
    # result may say what it spent before it failed); an executor may put first those of an earlier run
    # of the same stage and candidate that it still knows of (a deleted Job's terminated pod).
    reports: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class EndpointRequest:
    """The serving endpoint the Deploy stage asks for."""

    model_name: str
    engine: str
    base_model_uri: str
    adapter_path: str | None
    merged_path: str | None
    node: str
    gpus: int


@dataclass(frozen=True)
class EndpointState:
    state: Literal["Pending", "Ready", "Failed"]
    url: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ProbeOutcome:
    ok: bool
    latency_ms: float | None = None
    tokens_per_second: float | None = None
    error: str = ""
