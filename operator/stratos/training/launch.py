"""Running a stage program on every GPU of the node: re-executing it under torchrun.

When the pod sees more than one GPU and is not already a torchrun worker, the train stage starts
``python -m torch.distributed.run --standalone --nproc_per_node N -m stratos.workloads.train <same args>``
and waits for it. Each worker trains one data-parallel replica (DDP through the Trainer/accelerate);
only rank 0 logs progress, saves the adapter and writes the result, the other ranks' results go to
/dev/null. If torchrun fails before rank 0 wrote a result (a worker crashed, NCCL could not start), the
launcher writes the failure itself, so the termination message is never empty. SIGTERM is passed on to
torchrun, which forwards it to the workers (they checkpoint and stop, see ``callbacks.StopAndSave``).

``STRATOS_NO_RELAUNCH=1`` disables this (one process on all visible GPUs, e.g. for debugging).
This path cannot run where the tests run (no GPU); the decision and the command are pure functions
and tested, the launch itself is not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from stratos.contracts.stage_io import DEFAULT_RESULT_PATH, write_result

NO_RELAUNCH_ENV = "STRATOS_NO_RELAUNCH"


def is_worker(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by torchrun (it sets LOCAL_RANK and WORLD_SIZE)."""
    env = os.environ if env is None else env
    return "LOCAL_RANK" in env and "WORLD_SIZE" in env


def rank(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    return int(env.get("RANK", "0") or 0)


def should_relaunch(gpus: int, env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return gpus > 1 and not is_worker(env) and env.get(NO_RELAUNCH_ENV, "") not in ("1", "true", "yes")


def torchrun_command(module: str, argv: Sequence[str], nproc: int, python: str | None = None) -> list[str]:
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *argv,
    ]


def result_path(argv: Sequence[str]) -> str:
    """The ``--result`` value in a stage's arguments (``--result X`` or ``--result=X``)."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--result" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--result="):
            return arg.split("=", 1)[1]
    return DEFAULT_RESULT_PATH


def with_result(argv: Sequence[str], path: str) -> list[str]:
    """``argv`` with its result path replaced (or added)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--result" and i + 1 < len(argv):
            skip = True
            continue
        if arg.startswith("--result="):
            continue
        out.append(arg)
    return [*out, "--result", path]


def relaunch(module: str, argv: Sequence[str], nproc: int) -> int:
    """Run the stage under torchrun on ``nproc`` GPUs; returns torchrun's exit code."""
    target = result_path(argv)
    if target != "-":
        with contextlib.suppress(OSError):
            Path(target).write_text("")  # so an empty file afterwards means rank 0 never reported
    proc = subprocess.Popen(torchrun_command(module, argv, nproc))

    def forward(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        code = proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code != 0 and target != "-":
        try:
            written = Path(target).read_text().strip()
        except OSError:
            written = ""
        if not written:
            write_result(
                target,
                {
                    "ok": False,
                    "kind": "DistributedLaunchFailed",
                    "error": f"torchrun with {nproc} processes exited with code {code}",
                },
            )
    return code
