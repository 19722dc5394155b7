"""The stage machine's vocabulary: stages in pipeline order and the phase each one shows.

``status.stage`` is where the machine stands; it is persisted in the object's status, so an operator
that restarts reads it back and carries on from there. ``status.phase`` is the human summary.
"""

from __future__ import annotations

from enum import StrEnum

from stratos.api.status import Phase


class Stage(StrEnum):
    SELECT_SERVER = "SelectServer"
    EVALUATE_TEACHERS = "EvaluateTeachers"
    SELECT_STUDENT = "SelectStudent"
    SYNTHESIZE = "Synthesize"
    TRAIN = "Train"
    EVALUATE = "Evaluate"
    DEPLOY = "Deploy"
    SERVING = "Serving"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


ORDER: tuple[Stage, ...] = (
    Stage.SELECT_SERVER,
    Stage.EVALUATE_TEACHERS,
    Stage.SELECT_STUDENT,
    Stage.SYNTHESIZE,
    Stage.TRAIN,
    Stage.EVALUATE,
    Stage.DEPLOY,
    Stage.SERVING,
)

PHASE: dict[Stage, Phase] = {
    Stage.SELECT_SERVER: "SelectingServer",
    Stage.EVALUATE_TEACHERS: "EvaluatingTeachers",
    Stage.SELECT_STUDENT: "SelectingStudent",
    Stage.SYNTHESIZE: "Synthesizing",
    Stage.TRAIN: "Training",
    Stage.EVALUATE: "Evaluating",
    Stage.DEPLOY: "Deploying",
    Stage.SERVING: "Serving",
    Stage.SUCCEEDED: "Succeeded",
    Stage.FAILED: "Failed",
}


def parse_stage(value: object) -> Stage:
    """The persisted stage, or the first one for a new object (or an unknown value from a newer version)."""
    try:
        return Stage(str(value))
    except ValueError:
        return Stage.SELECT_SERVER
