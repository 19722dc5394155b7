"""How much GPU memory a node must offer before it is even a candidate.

The server is chosen before the student, so the hard hardware floor is the smallest requirement that
still leaves one student able to train *and* serve there (the paper's Table 2 drops the 8B student
later, because it "exceeds the selected server's hardware limits"). The rule is the student selector's
own (``students.hardware_fit``): LoRA training must fit one GPU, serving must fit
``SERVING_MEMORY_FRACTION`` of it. A user floor in ``spec.servers.minGpuMemoryGiB`` raises it further.
"""

from __future__ import annotations

from stratos.api.spec import DistillationJobSpec
from stratos.decide.estimate import serving_memory_gib, training_memory_gib
from stratos.decide.models import ModelFacts
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
