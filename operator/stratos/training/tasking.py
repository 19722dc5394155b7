"""The task plug-in and sample sets a model-side stage needs, built from its JSON config.

Every stage that grades a model goes through the same Task (prompt, extract, verify), and the probe
uses exactly the samples teacher-eval used (``sample_for_probe`` with the same size and seed), so the
teacher's reasoning traces line up with the student's questions by sample id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stratos.api.base import format_errors
from stratos.api.spec import TaskSpec
from stratos.contracts.stage_io import ConfigError
from stratos.data.sources import confine
from stratos.tasks import Sample, Task, build_task, sample_for_probe


def load_task(task: Mapping[str, Any], *, data_root: str | None) -> tuple[Task, TaskSpec]:
    """The Task a config's ``task`` object (TaskSpec JSON) describes; ConfigError when it is invalid."""
    try:
        spec = TaskSpec.model_validate(dict(task))
    except ValidationError as err:
        raise ConfigError(f"invalid task: {format_errors(err, 'task')}") from None
    try:
        return build_task(spec, data_root=data_root), spec
    except ValueError as err:
        raise ConfigError(f"invalid task: {err}") from None


def probe_set(task: Task, spec: TaskSpec, *, sample_size: int | None, seed: int | None) -> list[Sample]:
    """The probe samples: the config's size/seed override the task spec's, as in teacher-eval."""
    size = sample_size if sample_size is not None else spec.sample_size
    chosen_seed = seed if seed is not None else spec.seed
    return list(sample_for_probe(task, size, chosen_seed))


def local_file(path: str, *, data_root: str | None) -> Path:
    """A path from a config: relative paths are under ``data_root`` (the storage mount) when given, and
    a path under ``data_root`` may not leave it (``..``, symbolic links): ValueError otherwise."""
    p = Path(path)
    if not data_root:
        return p
    if not p.is_absolute() or str(p).startswith(data_root.rstrip("/") + "/"):
        return confine(path, Path(data_root) / p, data_root)
    return p


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p
