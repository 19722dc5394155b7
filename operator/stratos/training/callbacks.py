"""Trainer callbacks: progress a human can follow, and stopping in time with a resumable checkpoint.

``ProgressLogger`` replaces the Trainer's tqdm bars and dict dumps with one log line per logging step:
``step 12/40 (30%) loss 1.8732 lr 1.5e-04 elapsed 0:01:02 eta 0:02:41``.

``StopAndSave`` makes every stop leave a checkpoint a restarted pod resumes from:

- at the last step it asks for a save (the Trainer only saves every ``save_steps``);
- when the deadline (``maxSeconds`` from the stage's start) is near, it stops early and saves. "Near"
  means the next step would likely not finish, plus a reserve for saving the adapter (and merged
  weights), see ``deadline_reached``;
- when the pod is asked to stop (SIGTERM: preemption, node drain), ``request_stop`` makes the next
  step end stop and save, within the pod's termination grace period if a step is shorter than it.

Under torchrun the decision is collective (``distributed.agree_to_stop``): every rank stops at the same
step when any rank's deadline is near or any rank got SIGTERM, so none waits alone in a collective.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from stratos.training.distributed import DEADLINE, TERMINATED, VERDICTS, agree_to_stop

log = logging.getLogger("stratos.training")


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(0.0, seconds))))


def deadline_reached(now: float, deadline: float | None, step_seconds: float, reserve: float) -> bool:
    """Whether to stop before the next step: it would end, with the save reserve, past the deadline.

    ``step_seconds`` is the mean step time so far; a 1.5x margin absorbs uneven steps (GRPO's
    generation, evaluation, a slow checkpoint).
    """
    if deadline is None:
        return False
    return now + 1.5 * step_seconds + reserve >= deadline


def save_reserve(max_seconds: float, *, merge: bool) -> float:
    """Seconds kept for the final save: 10% of the budget, between 2 s and 30 s; merging the weights adds
    20% of the budget, at most 120 s."""
    return min(max(0.1 * max_seconds, 2.0), 30.0) + (min(0.2 * max_seconds, 120.0) if merge else 0.0)


class TimeLedger:
    """Seconds of ``maxSeconds`` used by earlier pods of this training, kept on the storage volume.

    Each pod adds what it used (written at every step end by rank 0), so a retried or resumed pod gets
    what is left instead of a fresh ``maxSeconds``; time while no pod ran (suspended) is not counted.
    """

    def __init__(self, path: Path, began: float, *, writer: bool = True) -> None:
        self.path, self.began, self.writer = path, began, writer
        try:
            self.before = max(0.0, float(path.read_text()))
        except (FileNotFoundError, ValueError):
            self.before = 0.0

    def deadline(self, max_seconds: float | None) -> float | None:
        """The monotonic time this pod must stop by."""
        return self.began + max_seconds - self.before if max_seconds else None

    def used(self, now: float) -> float:
        return self.before + (now - self.began)

    def record(self, now: float) -> None:
        if self.writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(f"{self.used(now):.3f}")
            tmp.replace(self.path)


class ProgressLogger(TrainerCallback):
    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.started = time.monotonic()
        self.first_step: int | None = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.started = time.monotonic()
        self.first_step = state.global_step
        resumed = f", resuming at step {state.global_step}" if state.global_step else ""
        log.info(
            "%s: training %d steps (batch %d x %d accumulation)%s",
            self.algorithm,
            state.max_steps,
            args.per_device_train_batch_size,
            args.gradient_accumulation_steps,
            resumed,
        )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return
        elapsed = time.monotonic() - self.started
        done = state.global_step - (self.first_step or 0)
        remaining = state.max_steps - state.global_step
        eta = elapsed / done * remaining if done > 0 else 0.0
        extra = "".join(
            f" {k} {logs[k]:.4g}" for k in ("reward", "grad_norm") if isinstance(logs.get(k), float)
        )
        lr = logs.get("learning_rate")
        lr_text = f" lr {lr:.2e}" if isinstance(lr, float) else ""
        pct = 100 * state.global_step / state.max_steps if state.max_steps else 0.0
        log.info(
            "step %d/%d (%.0f%%) loss %.4f%s%s elapsed %s eta %s",
            state.global_step,
            state.max_steps,
            pct,
            float(logs["loss"]),
            lr_text,
            extra,
            _clock(elapsed),
            _clock(eta),
        )


class StopAndSave(TrainerCallback):
    """Save at the last step; stop and save when the deadline nears or a stop was requested."""

    def __init__(
        self, *, deadline: float | None = None, reserve: float = 0.0, ledger: TimeLedger | None = None
    ) -> None:
        self.deadline = deadline
        self.reserve = reserve
        self.ledger = ledger
        self.stop_reason: str | None = None
        self._stop_requested = False
        self._began: float | None = None
        self._steps = 0

    def request_stop(self) -> None:
        """Ask for a stop at the next step end (safe to call from a signal handler)."""
        self._stop_requested = True

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._began = time.monotonic()
        self._steps = 0

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._steps += 1
        now = time.monotonic()
        if self.ledger is not None:
            self.ledger.record(now)
        step_seconds = (now - (self._began or now)) / self._steps
        if state.global_step >= state.max_steps:  # the same step on every rank
            control.should_save = True
            return
        local = 0
        if self._stop_requested:
            local = TERMINATED
        elif deadline_reached(now, self.deadline, step_seconds, self.reserve):
            local = DEADLINE
        self.stop_reason = VERDICTS[agree_to_stop(local, getattr(args, "device", None))]
        if self.stop_reason is None:
            return
        log.warning(
            "stopping at step %d/%d (%s); saving a checkpoint to resume from",
            state.global_step,
            state.max_steps,
            self.stop_reason,
        )
        control.should_training_stop = True
        control.should_save = True
