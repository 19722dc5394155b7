"""DistillationJob spec: what the user asks for (the paper's input specification).

These models are the single source of truth for the API: the CRD schema is generated from them
(`python -m stratos.api.crdgen`), so every `description` is what `kubectl explain` prints.
Cross-field rules are `CelRule`s checked twice, by the API server (CEL) and by the validators here.
The teacher/student models live in stratos.api.candidates and the node, serving and storage models
in stratos.api.placement; all are re-exported here.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from stratos.api.base import ApiModel, CelRule, cel_config, cel_schema, section
from stratos.api.candidates import (
    EndpointSpec,
    ModelSpec,
    SecretKeyRef,
    StudentSpec,
    TeacherSpec,
    TeacherWeights,
)
from stratos.api.durations import parse_duration
from stratos.api.placement import (
    PvcSource,
    ResourceRequirements,
    RetryPolicy,
    ServersSpec,
    ServingSpec,
    StorageSpec,
    Toleration,
)
from stratos.api.pods import PodOptions
from stratos.api.types import DNS_LABEL_PATTERN, DatasetUri, Duration

__all__ = [
    "MAX_CANDIDATES",
    "DatasetSpec",
    "DistillationJobSpec",
    "DistillationSpec",
    "EndpointSpec",
    "LoraSpec",
    "ModelSpec",
    "PodOptions",
    "PvcSource",
    "Requirements",
    "ResourceRequirements",
    "RetryPolicy",
    "SecretKeyRef",
    "ServersSpec",
    "ServingSpec",
    "StorageSpec",
    "StudentSpec",
    "SynthesisSpec",
    "TaskSpec",
    "TeacherSpec",
    "TeacherWeights",
    "Toleration",
    "VerifierSpec",
    "Weights",
]

#: Upper bound on teachers and students per job (bounds the CEL uniqueness checks too).
MAX_CANDIDATES = 16

# --------------------------------------------------------------------------------------------- task

REGEX_NEEDS_PATTERN = CelRule(
    rule="self.verifier != 'regex' || has(self.pattern)",
    message="pattern is required when verifier is regex",
    field_path=".pattern",
    reason="FieldValueRequired",
)

JSONL_NEEDS_DATASET = CelRule(
    rule="self.builtin != 'jsonl' || has(self.dataset)",
    message="dataset is required when builtin is jsonl",
    field_path=".dataset",
    reason="FieldValueRequired",
)


MAX_PATTERN_NESTING = 64
"""Deepest group nesting a regex verifier pattern may have.

Python's regex compiler recurses once per nested group, so whether a deep pattern compiles depends on
the interpreter's recursion limit at that moment; a fixed bound makes the answer the same everywhere.
"""


def _group_nesting(pattern: str) -> int:
    """How deep the groups of a regular expression nest (escapes and character classes skipped)."""
    depth = deepest = 0
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth = max(depth - 1, 0)
    return deepest


class DatasetSpec(ApiModel):
    """User data for the jsonl task: where it lives, which fields hold prompt and answer, how to verify."""

    model_config = cel_config(REGEX_NEEDS_PATTERN)

    train: DatasetUri = Field(
        description="URI of the training data, one JSON object per line: /abs/path on the storage volume, "
        "file://PATH, s3://BUCKET/KEY, hf://datasets/ORG/NAME or configmap://NAME/KEY."
    )
    test: DatasetUri | None = Field(
        None,
        description="URI of held-out data for the final evaluation (same forms as train). "
        "Unset: part of train is held out.",
    )
    prompt_field: str = Field(
        "prompt", min_length=1, max_length=128, description="JSON field with the prompt."
    )
    answer_field: str = Field(
        "answer", min_length=1, max_length=128, description="JSON field with the reference answer."
    )
    verifier: Literal["exact", "numeric", "set", "regex"] = Field(
        "exact",
        description="How a predicted answer is checked against the reference: exact (equal after trimming "
        "whitespace), numeric (equal as numbers), set (same items in any order), regex (the answer is "
        "extracted with pattern, its first group if any, then compared exactly).",
    )
    pattern: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Regular expression (Python syntax) for the regex verifier; required for regex.",
    )

    @field_validator("train", "test")
    @classmethod
    def _stays_on_storage(cls, value: str | None) -> str | None:
        """A plain path is on the storage volume: a ``..`` segment could lead off it, so none is allowed."""
        if value is not None and "://" not in value and ".." in value.split("/"):
            raise ValueError(f"{value!r}: a path on the storage volume may not contain '..' segments")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            depth = _group_nesting(value)
            if depth > MAX_PATTERN_NESTING:
                raise ValueError(
                    f"pattern is too complex to compile: groups nest {depth} deep, at most "
                    f"{MAX_PATTERN_NESTING} allowed: nest fewer groups"
                )
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc
            except (RecursionError, OverflowError, MemoryError) as exc:  # e.g. deeply nested groups
                raise ValueError(
                    f"pattern is too complex to compile ({type(exc).__name__}): nest fewer groups"
                ) from exc
        return value

    @model_validator(mode="after")
    def _rules(self) -> Self:
        REGEX_NEEDS_PATTERN.check(self.verifier != "regex" or self.pattern is not None)
        return self


class TaskSpec(ApiModel):
    """What the student must learn: a built-in task or user data, and how many samples probe the models."""

    model_config = cel_config(JSONL_NEEDS_DATASET)

    builtin: Literal["mahjong", "gsm8k", "jsonl"] = Field(
        "mahjong",
        description="Task plug-in: mahjong (winning tiles of 13-tile hands, generated and verified exactly), "
        "gsm8k (grade-school math, numeric answers) or jsonl (your data, see dataset).",
    )
    sample_size: int = Field(
        50, ge=1, le=10000, description="Samples used to evaluate teachers and probe students."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for sampling and data generation.")
    train_size: int | None = Field(
        None, ge=1, le=1_000_000, description="Training examples the mahjong generator makes (default 4260)."
    )
    test_size: int | None = Field(
        None, ge=1, le=100_000, description="Held-out examples the mahjong generator makes (default 100)."
    )
    dataset: DatasetSpec | None = Field(None, description="User data; required when builtin is jsonl.")

    @model_validator(mode="after")
    def _rules(self) -> Self:
        JSONL_NEEDS_DATASET.check(self.builtin != "jsonl" or self.dataset is not None)
        return self


# ------------------------------------------------------------------------------------- requirements

WEIGHTS_POSITIVE = CelRule(
    rule="self.accuracy + self.trainingTime + self.throughput + self.latency + self.cost > 0.0",
    message="at least one of accuracy, trainingTime, throughput, latency, cost must be greater than zero",
)


class Weights(ApiModel):
    """Weights of the objectives the user cares about.

    With ``servers.rule: joint`` (default) every feasible (node, student) pair gets the utility
    U = sum of weight x normalised objective over accuracy, trainingTime, throughput, latency and cost
    (each normalised over the feasible pairs, 1 best, 0 worst; weights divided by their sum). With
    ``servers.rule: paper`` only accuracy, trainingTime and throughput count, in the paper's student score
    M = alpha*accuracy + beta*(1 - trainingTime) + theta*throughput on the node the grid chose.
    """

    model_config = cel_config(WEIGHTS_POSITIVE)

    accuracy: float = Field(0.5, ge=0, le=1, description="alpha: weight of the normalised probe accuracy.")
    training_time: float = Field(
        0.2, ge=0, le=1, description="beta: weight of the normalised training time (shorter is better)."
    )
    throughput: float = Field(
        0.3, ge=0, le=1, description="theta: weight of the normalised decode throughput (tokens/s)."
    )
    latency: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Weight of the chosen node's normalised latency to the users (lower is better); "
        "joint rule only (the paper rule handles latency in the server grid).",
    )
    cost: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Weight of the normalised expected total cost of the run (node hours for probes, "
        "training, evaluation and serving.expectedHours of hosting, plus teacher tokens); joint rule only.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        WEIGHTS_POSITIVE.check(
            self.accuracy + self.training_time + self.throughput + self.latency + self.cost > 0
        )
        return self


class Requirements(ApiModel):
    """What the distilled model and the run must achieve, and what they may cost."""

    min_accuracy: float = Field(
        0.0,
        ge=0,
        le=1,
        description="A: minimum accuracy (0..1) of the teacher and of the distilled student on held-out "
        "data (a student that misses it is replaced by the next in the fallback order). With "
        "servers.rule paper it also filters the student probes.",
    )
    probe_margin: float = Field(
        0.10,
        ge=0,
        le=1,
        description="delta: with servers.rule joint, students whose probe accuracy is within delta of the "
        "best probe are kept (the probe ranks capacity; A is checked after training).",
    )
    min_tokens_per_second: float = Field(
        0.0, ge=0, le=1_000_000, description="R: minimum decode throughput of the served student, tokens/s."
    )
    max_training_time: Duration = Field(
        "2h", description="T: longest acceptable training time on the chosen node, e.g. 90m, 2h, 1h30m."
    )
    max_hourly_cost: float | None = Field(
        None, gt=0, description="Nodes that cost more than this per hour (USD) are not considered."
    )
    max_latency_ms: float | None = Field(
        None, gt=0, description="Nodes further than this from the users (milliseconds) are not considered."
    )
    budget: float | None = Field(
        None,
        gt=0,
        description="Total spend allowed (USD): teacher tokens plus node hours. No stage starts whose "
        "estimated cost exceeds what is left of it (status.cost.estimates, status.cost.charges). With "
        "servers.rule joint, pairs whose expected total cost exceeds it are not considered.",
    )
    weights: Weights = section(
        Weights, "Weights of the objectives: the joint utility U, or the paper's student score (Eq. 2)."
    )

    @property
    def max_training_seconds(self) -> float:
        """max_training_time in seconds."""
        return parse_duration(self.max_training_time)


# ------------------------------------------------------------------------------------ distillation

INJECTION_SFT_ONLY = CelRule(
    rule="self.strategy != 'injection' || self.algorithm in ['auto', 'sft-lora']",
    message="knowledge injection trains with sft-lora only: algorithm must be auto or sft-lora",
    field_path=".algorithm",
    reason="FieldValueForbidden",
)


class LoraSpec(ApiModel):
    """LoRA adapter settings."""

    rank: int = Field(16, ge=1, le=256, description="Adapter rank r.")
    alpha: int = Field(32, ge=1, le=1024, description="Scaling alpha (the update is scaled by alpha/r).")
    dropout: float = Field(0.05, ge=0, le=1, description="Dropout on the adapter input.")


class VerifierSpec(ApiModel):
    """The independent verifier of teacher-written questions (paper: a second teacher instance)."""

    endpoint: EndpointSpec = Field(description="Where the verifier is served (OpenAI-compatible).")
    cost_per_million_tokens: float = Field(
        0.0, ge=0, le=1_000_000, description="Price in USD per million tokens, counted in status.cost."
    )
    max_concurrency: int = Field(8, ge=1, le=256, description="Most requests in flight to the verifier.")


class SynthesisSpec(ApiModel):
    """How the training data is made beyond the real questions (paper, "Knowledge Injection", Figure 5)."""

    augment: Literal["auto", "mutate", "teacher", "none"] = Field(
        "auto",
        description="How synthetic questions are made: mutate (the task's own mutator edits a real "
        "question and its solver gives the answer; Mahjong replaces a meld or the pair), teacher (the "
        "teacher writes them: for Mahjong the paper's Figure 5 rewrite of a seed hand, its answer checked "
        "by the solver; for other tasks a new question in a seed's style, kept only when the verifier "
        "agrees on its answer), none (real questions only), auto (mutate where the task has a mutator, "
        "else teacher).",
    )
    verifier: VerifierSpec | None = Field(
        None,
        description="An independent verifier: a second model that answers each question the teacher wrote, "
        "in fresh requests; the question is kept only when both agree. It is not a candidate teacher (not "
        "evaluated, never selected, and white-box-kd needs no weights of it). Unset: the selected teacher's "
        "own endpoint, asked separately. Tasks with a solver (Mahjong) are checked by the solver.",
    )


class DistillationSpec(ApiModel):
    """How knowledge moves from teacher to student."""

    model_config = cel_config(INJECTION_SFT_ONLY)

    strategy: Literal["auto", "alignment", "injection"] = Field(
        "auto",
        description="auto picks alignment when the teacher meets minAccuracy, else injection; alignment "
        "distils the teacher's chain of thought; injection has the teacher reason backwards from known "
        "answers.",
    )
    algorithm: Literal["auto", "sft-lora", "grpo", "white-box-kd", "dpo"] = Field(
        "auto", description="Training algorithm; auto means sft-lora. Injection allows sft-lora only."
    )
    target_samples: int = Field(
        10000, ge=1, le=10_000_000, description="Training examples to synthesise (real plus synthetic)."
    )
    completion: Literal["reasoning", "answer"] = Field(
        "reasoning",
        description="What the student is trained to write. reasoning: the teacher's reasoning (its chain of "
        "thought under alignment, its reverse reasoning from the known answer under injection) before the "
        "answer line. answer: the verified answer line alone; the teacher is asked for no reasoning, so the "
        "examples are the real questions with their known answers plus the verified synthetic ones (which "
        "the teacher still writes when synthesis.augment is teacher). A small student learns exact answers "
        "sooner from answer lines: each example costs it a fraction of the tokens.",
    )
    epochs: int = Field(1, ge=1, le=100, description="Passes over the training data.")
    sequence_length: int = Field(1024, ge=64, le=131072, description="Longest training sequence, tokens.")
    micro_batch_size: int = Field(4, ge=1, le=1024, description="Sequences per GPU per step.")
    gradient_checkpointing: bool = Field(True, description="Trade compute for activation memory.")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate.")
    lora: LoraSpec = section(LoraSpec, "LoRA adapter settings.")
    synthesis: SynthesisSpec = section(
        SynthesisSpec, "How synthetic training questions are made and checked."
    )
    mfu: float = Field(
        0.35, ge=0.01, le=1, description="Model-FLOPs utilisation assumed when estimating training time."
    )

    @model_validator(mode="after")
    def _rules(self) -> Self:
        INJECTION_SFT_ONLY.check(self.strategy != "injection" or self.algorithm in ("auto", "sft-lora"))
        return self


# ------------------------------------------------------------------------------------------- spec

UNIQUE_TEACHERS = CelRule(
    rule="self.all(t, self.exists_one(u, u.name == t.name))", message="teacher names must be unique"
)
UNIQUE_STUDENTS = CelRule(
    rule="self.all(s, self.exists_one(u, u.name == s.name))", message="student names must be unique"
)


WHITE_BOX_NEEDS_WEIGHTS = CelRule(
    rule="!has(self.distillation) || self.distillation.algorithm != 'white-box-kd' || "
    "self.teachers.all(t, has(t.weights))",
    message="white-box-kd needs every teacher's own weights (teachers[].weights.uri): whichever teacher "
    "is selected lends its logits to training",
    field_path=".teachers",
    reason="FieldValueRequired",
)


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


class DistillationJobSpec(ApiModel):
    """What to distil, from which teachers into which students, under which requirements, and where."""

    model_config = cel_config(WHITE_BOX_NEEDS_WEIGHTS)

    task: TaskSpec = section(TaskSpec, "The task the student must learn.")
    requirements: Requirements = section(Requirements, "Accuracy, speed, time and cost requirements.")
    servers: ServersSpec = section(ServersSpec, "Which nodes are candidates and how one is chosen.")
    teachers: list[TeacherSpec] = Field(
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="Candidate teachers (OpenAI-compatible endpoints), 1 to 16, unique names.",
        json_schema_extra=cel_schema(UNIQUE_TEACHERS),
    )
    students: list[StudentSpec] = Field(
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="Candidate students, 1 to 16, unique names.",
        json_schema_extra=cel_schema(UNIQUE_STUDENTS),
    )
    distillation: DistillationSpec = section(DistillationSpec, "Strategy, algorithm and training settings.")
    serving: ServingSpec = section(ServingSpec, "How the result is served.")
    storage: StorageSpec | None = Field(
        None,
        description="Where datasets and adapters live; unset: the operator's default claim (chart value "
        "storage.defaultClaim); with neither the job fails (reason StorageUnset).",
    )
    pods: PodOptions = section(
        PodOptions, "Environment, credentials, ServiceAccount and metadata of the job's pods."
    )
    retries: RetryPolicy = section(RetryPolicy, "Retries of failed stages.")
    suspend: bool = Field(False, description="Pause the job: no new stages start until it is false again.")
    queue_name: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Kueue LocalQueue (in the job's namespace) that admits the stage Jobs: each is created "
        "suspended with the label kueue.x-k8s.io/queue-name and starts when Kueue admits it; the stage "
        "condition says while it waits for quota and when it was preempted. Unset: Jobs start at once.",
    )

    @field_validator("teachers")
    @classmethod
    def _unique_teachers(cls, value: list[TeacherSpec]) -> list[TeacherSpec]:
        dups = _duplicates([t.name for t in value])
        UNIQUE_TEACHERS.check(not dups, detail=", ".join(dups))
        return value

    @field_validator("students")
    @classmethod
    def _unique_students(cls, value: list[StudentSpec]) -> list[StudentSpec]:
        dups = _duplicates([s.name for s in value])
        UNIQUE_STUDENTS.check(not dups, detail=", ".join(dups))
        return value

    @model_validator(mode="after")
    def _rules(self) -> Self:
        missing = [t.name for t in self.teachers if t.weights is None]
        WHITE_BOX_NEEDS_WEIGHTS.check(
            self.distillation.algorithm != "white-box-kd" or not missing,
            detail="missing for " + ", ".join(missing),
        )
        return self
