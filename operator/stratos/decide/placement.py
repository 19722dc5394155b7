"""How much GPU memory a node must offer before it is even a candidate.

The server is chosen before the student, so the hard hardware floor is the smallest requirement that
still leaves one student able to train *and* serve there (the paper's Table 2 drops the 8B student
later, because it "exceeds the selected server's hardware limits"). The rule is the student selector's
own (``students.hardware_fit``): LoRA training must fit one GPU, serving must fit
``SERVING_MEMORY_FRACTION`` of it. A user floor in ``spec.servers.minGpuMemoryGiB`` raises it further.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stratos.api.spec import DistillationJobSpec
from stratos.decide.estimate import serving_memory_gib, tokens_for, training_flops, training_memory_gib
from stratos.decide.joint import CostModel, JointStudent, JointWeights, Limits, probe_hours
from stratos.decide.models import ModelFacts
from stratos.decide.nodes import NodeFacts, gather_candidates
from stratos.decide.servers import ServerChoice, select_server
from stratos.decide.students import SERVING_MEMORY_FRACTION, HardwareFit, hardware_fit


def student_fit(spec: DistillationJobSpec, model: ModelFacts, gpu_memory_gib: float) -> HardwareFit:
    """Whether one student trains and serves on a GPU with ``gpu_memory_gib``, with the job's settings."""
    dist = spec.distillation
    return hardware_fit(
        model,
        gpu_memory_gib,
        sequence_length=dist.sequence_length,
        micro_batch_size=dist.micro_batch_size,
        lora_rank=dist.lora.rank,
        gradient_checkpointing=dist.gradient_checkpointing,
        context_length=spec.serving.max_model_len,
        serving=spec.serving.enabled,
    )


def student_memory_gib(spec: DistillationJobSpec, model: ModelFacts) -> float:
    """Per-GPU memory one student needs: the larger of LoRA training and serving (with headroom)."""
    dist = spec.distillation
    train = training_memory_gib(
        model,
        sequence_length=dist.sequence_length,
        micro_batch_size=dist.micro_batch_size,
        lora_rank=dist.lora.rank,
        gradient_checkpointing=dist.gradient_checkpointing,
    )
    if not spec.serving.enabled:
        return train
    serve = serving_memory_gib(model, context_length=spec.serving.max_model_len) / SERVING_MEMORY_FRACTION
    return max(train, serve)


def required_gpu_memory_gib(spec: DistillationJobSpec) -> float:
    """The per-GPU memory floor for candidate nodes (GiB)."""
    smallest = min(student_memory_gib(spec, ModelFacts.from_spec(s.model)) for s in spec.students)
    floor = spec.servers.min_gpu_memory_gib or 0.0
    return max(smallest, floor)


def joint_student(spec: DistillationJobSpec, name: str, accuracy: float | None = None) -> JointStudent:
    """One spec student as the joint choice sees it: memory per GPU, training FLOPs, probe accuracy."""
    student = next(s for s in spec.students if s.name == name)
    facts = ModelFacts.from_spec(student.model)
    dist = spec.distillation
    tokens = tokens_for(dist.target_samples, dist.epochs, dist.sequence_length)
    return JointStudent(
        name=name,
        parameters=facts.parameters,
        memory_gib=student_memory_gib(spec, facts),
        training_flops=training_flops(
            facts, tokens=tokens, gradient_checkpointing=dist.gradient_checkpointing
        ),
        accuracy=accuracy,
    )


def joint_weights(spec: DistillationJobSpec) -> JointWeights:
    w = spec.requirements.weights
    return JointWeights(
        accuracy=w.accuracy,
        latency=w.latency,
        cost=w.cost,
        training_time=w.training_time,
        throughput=w.throughput,
    )


def joint_limits(spec: DistillationJobSpec) -> Limits:
    req = spec.requirements
    return Limits(
        max_training_hours=req.max_training_seconds / 3600,
        min_tokens_per_second=req.min_tokens_per_second,
        budget=req.budget,
    )


#: Tokens a student probe decodes per sample (the probe stage's max_new_tokens) and the held-out
#: evaluation's per sample, for the node-hour estimates of the joint choice.
PROBE_TOKENS_PER_SAMPLE = 128
EVALUATION_TOKENS_PER_SAMPLE = 256


def probes_usd(
    spec: DistillationJobSpec, students: list[JointStudent], plan: dict[str, NodeFacts | None]
) -> float:
    """Node cost of the probes: each on its probe node for sampleSize x 128 decoded tokens."""
    tokens = spec.task.sample_size * PROBE_TOKENS_PER_SAMPLE
    return sum(
        node.hourly_cost * probe_hours(s, node, tokens)
        for s in students
        if (node := plan.get(s.name)) is not None
    )


def joint_costs(
    spec: DistillationJobSpec,
    *,
    synthesis_usd: float,
    teacher_evaluation_usd: float,
    probes: float,
) -> CostModel:
    return CostModel(
        mfu=spec.distillation.mfu,
        synthesis_usd=synthesis_usd,
        teacher_evaluation_usd=teacher_evaluation_usd,
        probes_usd=probes,
        evaluation_tokens=float(spec.task.sample_size * EVALUATION_TOKENS_PER_SAMPLE),
        hosting_hours=spec.serving.expected_hours if spec.serving.enabled else 0.0,
    )


def gather_options(spec: DistillationJobSpec) -> dict[str, Any]:
    """The job's node filters, as gather_candidates takes them."""
    servers = spec.servers
    return {
        "node_selector": servers.node_selector,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in servers.tolerations],
        "region_latency_ms": servers.region_latency_ms,
    }


def server_choice(
    spec: DistillationJobSpec, nodes: Sequence[Mapping[str, Any]], *, runners_up: int | None = None
) -> tuple[list[NodeFacts], ServerChoice]:
    """The server decision (README "The decisions" 1) for a spec over Node objects: the candidates the
    job's filters let through, and the choice among them. The stage machine, ``stratos plan`` and its
    picture all decide through here; ``runners_up`` defaults to ``spec.servers.runnersUp``."""
    candidates, rejected = gather_candidates(nodes, **gather_options(spec))
    choice = select_server(
        candidates,
        cost_window=spec.servers.cost_window,
        min_gpu_memory_gib=required_gpu_memory_gib(spec),
        max_hourly_cost=spec.requirements.max_hourly_cost,
        max_latency_ms=spec.requirements.max_latency_ms,
        runners_up=spec.servers.runners_up if runners_up is None else runners_up,
        rejected=rejected,
    )
    return candidates, choice
