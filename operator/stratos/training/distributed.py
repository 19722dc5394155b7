"""What the ranks of a torchrun training must do together (one process per GPU).

- ``agree_to_stop``: each rank has its own clock and its own SIGTERM handler; if one rank stopped
  alone, the others would wait in the next collective until the NCCL timeout. At every step end the
  ranks combine their verdicts with one ``all_reduce(MAX)``, so all stop at the same step, for the most
  urgent reason any of them has (a SIGTERM beats the deadline).
- ``map_sharded``: work that is the same for every rank (DPO's rejected answers) is split: rank r takes
  items r, r + world, ...; the results are gathered back in the original order on every rank.

Without torch.distributed (one GPU, CPU) both are the plain local operation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Stop verdicts, by urgency: the largest any rank has wins.
CONTINUE, DEADLINE, TERMINATED = 0, 1, 2
VERDICTS = {CONTINUE: None, DEADLINE: "deadline", TERMINATED: "terminated"}


def world() -> tuple[int, int]:
    """(rank, world size) of the initialized process group, or (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def ensure_process_group() -> None:
    """Under torchrun, start the process group now (the Trainer would, later) so that work before the
    Trainer can be shared; the Trainer then uses this one."""
    import os

    import torch
    import torch.distributed as dist

    if dist.is_initialized() or "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def agree_to_stop(verdict: int, device: Any = None) -> int:
    """The verdict every rank acts on: the maximum over ranks (called by all ranks at the same step)."""
    if world()[1] == 1:
        return verdict
    import torch
    import torch.distributed as dist

    if device is None:
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([verdict], dtype=torch.int64, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def map_sharded(fn: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R]:
    """``fn(items)``, computed as one slice per rank and gathered in order on every rank."""
    rank, size = world()
    if size == 1:
        return list(fn(list(items)))
    import torch.distributed as dist

    mine = list(fn(list(items[rank::size])))
    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, mine)
    out: list[Any] = [None] * len(items)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out
