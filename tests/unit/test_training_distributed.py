"""Ranks of a multi-GPU training decide together (issue 15, defect 11), with two CPU processes on gloo.

Under torchrun each rank has its own clock and its own SIGTERM: a rank that stopped alone would leave the
others waiting in the next collective until the NCCL timeout. The stop verdict is agreed by all ranks at
every step end; DPO's rejected answers are generated one shard per rank and gathered in order.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import TrainerControl, TrainerState, TrainingArguments

from stratos.training.callbacks import StopAndSave
from stratos.training.distributed import map_sharded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _step(stopper: StopAndSave, step: int) -> TrainerControl:
    state, control = TrainerState(), TrainerControl()
    state.global_step, state.max_steps = step, 10
    args = TrainingArguments(output_dir="/tmp/unused", use_cpu=True, report_to=[])
    stopper.on_step_end(args, state, control)
    return control


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        seen: dict[str, Any] = {}
        # 1. Only rank 1 is told to stop (its SIGTERM); both stop at the same step.
        stopper = StopAndSave()
        if rank == 1:
            stopper.request_stop()
        control = _step(stopper, 3)
        seen["sigterm"] = [stopper.stop_reason, control.should_training_stop, control.should_save]
        # 2. Only rank 0's deadline has come (its clock started earlier); both stop.
        stopper = StopAndSave(deadline=time.monotonic() - 1 if rank == 0 else None)
        stopper.on_train_begin(None, TrainerState(), TrainerControl())  # type: ignore[arg-type]
        control = _step(stopper, 4)
        seen["deadline"] = [stopper.stop_reason, control.should_training_stop]
        # 3. Nobody asks: nobody stops.
        control = _step(StopAndSave(), 5)
        seen["none"] = [control.should_training_stop]
        # 4. DPO's rejected answers: each rank answers its own share; every rank gets all, in order.
        asked: list[int] = []

        def answer(items: list[int]) -> list[str]:
            asked.extend(items)
            return [f"answer {i}" for i in items]

        seen["answers"] = map_sharded(answer, list(range(7)))
        seen["asked"] = asked
        Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


def test_two_ranks_stop_together_and_share_generation(tmp_path: Path) -> None:
    # fork: the children share the parent's imports (torch, transformers) instead of importing again.
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in seen:
        assert rank["sigterm"] == ["terminated", True, True]
        assert rank["deadline"] == ["deadline", True]
        assert rank["none"] == [False]
        assert rank["answers"] == [f"answer {i}" for i in range(7)]
    assert seen[0]["asked"] == [0, 2, 4, 6] and seen[1]["asked"] == [1, 3, 5]


def test_one_process_is_the_plain_local_operation() -> None:
    assert map_sharded(lambda items: [i * 2 for i in items], [1, 2, 3]) == [2, 4, 6]
    stopper = StopAndSave()
    stopper.request_stop()
    assert _step(stopper, 1).should_training_stop and stopper.stop_reason == "terminated"


def test_max_seconds_is_for_the_whole_training_not_each_pod(tmp_path: Path) -> None:
    """Issue 15, defect 10: a retried pod gets what is left of maxSeconds, not a fresh maxSeconds."""
    from stratos.training.callbacks import TimeLedger

    path = tmp_path / "out" / "seconds-used"
    first = TimeLedger(path, began=100.0)
    assert first.before == 0.0 and first.deadline(600) == 700.0
    stopper = StopAndSave(deadline=first.deadline(600), ledger=first)
    stopper.on_train_begin(None, TrainerState(), TrainerControl())  # type: ignore[arg-type]
    _step(stopper, 1)  # records the time used so far at every step end
    used = float(path.read_text())
    assert used > 0
    second = TimeLedger(path, began=5000.0)  # the next pod, on another clock
    assert second.before == used and second.deadline(600) == 5000.0 + 600 - used
    assert TimeLedger(path, began=0.0, writer=False).deadline(None) is None
