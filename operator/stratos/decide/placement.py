"""How much GPU memory a node must offer before it is even a candidate.

The server is chosen before the student, so the hard hardware floor is the smallest requirement that
still leaves one student able to train *and* serve there (the paper's Table 2 drops the 8B student
later, because it "exceeds the selected server's hardware limits"). A user floor in
``spec.servers.minGpuMemoryGiB`` raises it further.
"""

from __future__ import annotations

from stratos.api.spec import DistillationJobSpec
from stratos.decide.estimate import serving_memory_gib, training_memory_gib
from stratos.decide.models import ModelFacts


def student_memory_gib(spec: DistillationJobSpec, model: ModelFacts) -> float:
    """Per-GPU memory one student needs on the node: the larger of LoRA training and serving."""
    dist = spec.distillation
    train = training_memory_gib(
        model,
        sequence_length=dist.sequence_length,
        micro_batch_size=dist.micro_batch_size,
        lora_rank=dist.lora.rank,
        gradient_checkpointing=dist.gradient_checkpointing,
    )
    serve = serving_memory_gib(model, context_length=spec.serving.max_model_len)
    return max(train, serve)


def required_gpu_memory_gib(spec: DistillationJobSpec) -> float:
    """The per-GPU memory floor for candidate nodes (GiB)."""
    smallest = min(student_memory_gib(spec, ModelFacts.from_spec(s.model)) for s in spec.students)
    floor = spec.servers.min_gpu_memory_gib or 0.0
    return max(smallest, floor)
