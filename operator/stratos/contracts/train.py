"""The train stage's result, as the controller reads it.

The train stage's config (``TrainConfig``) still lives with its program in ``stratos.workloads.train``,
which is being reworked; its result is read here: steps, loss, wall time, where the adapter (and the
merged weights, when serving needs them) went, and the longest target trained on.
"""

from __future__ import annotations

from stratos.contracts.stage_io import StageResult


class TrainResult(StageResult):
    """What the train stage reports."""

    algorithm: str | None = None
    steps: int | None = None
    total_steps: int | None = None
    #: ``{"first": .., "last": ..}`` (an older image wrote a single number).
    train_loss: dict[str, float | None] | float | None = None
    reward: dict[str, float | None] | None = None
    seconds: float | int | None = None
    adapter_path: str | None = None
    merged_path: str | None = None
    #: The longest completion trained on, in the student's tokens (bounds evaluation's decoding).
    longest_target_tokens: int | None = None
    base_model: str | None = None

    def last_loss(self) -> float | None:
        loss = self.train_loss
        return loss.get("last") if isinstance(loss, dict) else loss
