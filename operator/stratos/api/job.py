"""The whole DistillationJob object, and parsing it from what kopf or a YAML file hands over."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from stratos.api.base import ApiModel, plain
from stratos.api.spec import DistillationJobSpec
from stratos.api.status import DistillationJobStatus

#: Keys that kopf itself may keep under `.status`; they are not ours and are ignored when parsing.
_FOREIGN_STATUS_KEYS = ("kopf",)


class DistillationJob(ApiModel):
    """DistillationJob turns one YAML file into a distilled, deployed, domain-specific small LLM.

    The operator picks the GPU node, the teacher, the student and the distillation strategy, runs the
    stages as Kubernetes Jobs, serves the result behind an OpenAI-compatible endpoint and records every
    decision, with its reason, in status.
    """

    # Literal strings, not the constants in stratos/__init__.py (a test checks they agree): mypy
    # needs literals here.
    api_version: Literal["stratos.io/v1alpha1"] = Field(
        "stratos.io/v1alpha1",
        description="APIVersion defines the versioned schema of this representation of an object.",
    )
    kind: Literal["DistillationJob"] = Field(
        "DistillationJob",
        description="Kind is a string value representing the REST resource this object represents.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: DistillationJobSpec = Field(description="What to distil, from which teachers into which students.")
    status: DistillationJobStatus = Field(
        default_factory=DistillationJobStatus, description="What the operator decided and observed."
    )

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> DistillationJob:
        """Parse a whole object (a kopf body, a dict from the API, a loaded YAML document).

        Raises pydantic.ValidationError; `stratos.api.format_errors(err)` renders it as
        `spec.task.dataset: ...` lines.
        """
        data = plain(body)
        status = data.get("status")
        if isinstance(status, dict):
            for key in _FOREIGN_STATUS_KEYS:
                status.pop(key, None)
        elif status is None:
            data.pop("status", None)
        return cls.model_validate(data)

    @property
    def name(self) -> str:
        """metadata.name ("" when unset)."""
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        """metadata.namespace ("" when unset)."""
        return str(self.metadata.get("namespace", ""))


def spec_from_body(body: Mapping[str, Any]) -> DistillationJobSpec:
    """Parse only `.spec` of an object (a kopf body or a dict); status is not looked at.

    Raises pydantic.ValidationError with locations relative to the spec; render them with
    `format_errors(err, root="spec")`.
    """
    spec = body.get("spec")
    return DistillationJobSpec.model_validate(plain(spec) if spec is not None else {})
