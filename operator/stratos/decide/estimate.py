"""Estimators for the student selector: memory fit, training time t, decode tokens/s r. Pure.

The paper's Eq. 2 needs, for every candidate student on the chosen server, the expected training time
t and the expected serving throughput r, and the hardware upper bound needs the GPU memory that LoRA
training and serving take. Nothing is measured here: these are first-order estimates from the model's
shape (:mod:`stratos.decide.models`) and the GPU's datasheet figures (:mod:`stratos.catalog.gpus`),
written so that each term can be checked by hand. Sizes are in GiB (2^30 bytes), the unit the GPU
catalog and ``nvidia.com/gpu.memory`` (MiB) use.

Symbols: N parameters, L layers, h hidden size, a attention heads, V vocabulary, s sequence length,
b micro-batch size, r LoRA rank.

Training memory (LoRA SFT, bf16 base, one GPU holds a whole replica):

    weights      2 B * N                               frozen base weights in bf16
    adapter      16 B * P_lora                         fp32 weights 4 + gradients 4 + Adam m 4 + v 4,
                 P_lora = L * sum_targets r*(d_in+d_out), targets q,k,v,o,gate,up,down
    activations  with gradient checkpointing:
                   2 B * s*b*h*L                       each layer's bf16 input, kept at the checkpoint
                 + s*b*h*(34 + 5*a*s/h) B              one layer's activations, recomputed in backward
                 without:
                   s*b*h*L*(34 + 5*a*s/h) B            all layers (Korthikanti et al. 2022, "Reducing
                                                       Activation Recomputation in Large Transformer
                                                       Models", Eq. 1, no tensor/sequence parallelism)
    logits       8 B * s*b*V                           fp32 logits for the loss (4 B) and their gradient
                                                       (4 B), both alive at the start of backward
    total        (weights + adapter + activations + logits) * 1.10 + 1.0 GiB
                                                       10% allocator slack/fragmentation, 1 GiB CUDA
                                                       context and kernels' workspace

Korthikanti's 34*s*b*h + 5*a*s^2*b bytes per layer is for a GPT block with a 4h MLP and attention
that materialises the s x s scores; fused (flash) attention avoids the 5*a*s/h term, so the estimate
errs on the safe side. LoRA's own small activations (dropout masks, rank-r intermediates) are left to
the slack. Counting the logits twice (8 B rather than 4 B) matters for large vocabularies: at s=1024,
b=4, V=128256 they are 3.9 GiB, and that is what makes an 8B LLaMA miss a 24 GiB card, as it does in
practice without quantisation or a fused cross-entropy kernel.

Serving memory (bf16 weights, one GPU: no tensor parallelism):

    weights      2 B * N
    KV cache     2 * L * a_kv * head_dim * context * batch * 2 B      (K and V, bf16)
    total        (weights + KV cache) * 1.10 + 1.0 GiB

Training time (LoRA):

    FLOPs = c * N * tokens, c = 4 (forward 2N + backward w.r.t. activations only 2N: the frozen base
            weights need no weight gradient, and the adapter's are negligible); c = 6 with gradient
            checkpointing (one more forward in backward). Attention's s-dependent FLOPs are ignored
            (about 5% at s=1024 for a 3B model); the MFU absorbs them.
    t [h] = FLOPs / (gpu_count * bf16_dense_tflops * 1e12 * mfu) / 3600      (data parallel)

Decode throughput at batch 1 (memory-bandwidth bound: every token reads every weight once):

    r [tok/s] = memory_bandwidth_gbps * 1e9 * 0.6 / (2 B * N)

0.6 is the fraction of datasheet bandwidth a decode step achieves (vLLM/llama.cpp reach 50-80% at
batch 1). The KV cache read per token is small next to the weights at short context and is ignored.
Serving runs on one GPU; tensor parallelism over k GPUs would divide the bytes per GPU by about k.
"""

from __future__ import annotations

from typing import Protocol

from stratos.decide.models import ModelFacts

GIB = float(2**30)
BF16_BYTES = 2
LORA_BYTES_PER_PARAM = 16  # fp32 weight + gradient + Adam first and second moments
LOGITS_BYTES = 8  # fp32 logits + their gradient
CHECKPOINT_BYTES = 2  # the bf16 layer input kept per layer under gradient checkpointing
ALLOCATOR_SLACK = 0.10
CUDA_CONTEXT_GIB = 1.0
DECODE_EFFICIENCY = 0.6
FLOPS_PER_PARAM_TOKEN = 4  # LoRA: forward 2 + backward w.r.t. activations 2
RECOMPUTE_FLOPS_PER_PARAM_TOKEN = 2  # gradient checkpointing: one more forward


class GPULike(Protocol):
    """The datasheet figures the estimators read (``stratos.catalog.gpus.GPUSpec`` has them)."""

    @property
    def bf16_dense_tflops(self) -> float: ...
    @property
    def memory_bandwidth_gbps(self) -> float: ...


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _with_overhead(nbytes: float) -> float:
    return nbytes * (1 + ALLOCATOR_SLACK) / GIB + CUDA_CONTEXT_GIB


def per_layer_activation_bytes(facts: ModelFacts, *, sequence_length: int, micro_batch_size: int) -> float:
    """s*b*h*(34 + 5*a*s/h): one transformer layer's saved activations (Korthikanti et al. 2022)."""
    s, b, h, a = sequence_length, micro_batch_size, facts.hidden_size, facts.num_attention_heads
    return s * b * h * (34 + 5 * a * s / h)


def activation_bytes(
    facts: ModelFacts, *, sequence_length: int, micro_batch_size: int, gradient_checkpointing: bool
) -> float:
    """Activations kept for backward: 2*s*b*h*L + one layer with checkpointing, all L layers without."""
    one_layer = per_layer_activation_bytes(
        facts, sequence_length=sequence_length, micro_batch_size=micro_batch_size
    )
    if gradient_checkpointing:
        inputs = CHECKPOINT_BYTES * sequence_length * micro_batch_size * facts.hidden_size * facts.layers
        return inputs + one_layer
    return one_layer * facts.layers


def training_memory_breakdown(
    facts: ModelFacts,
    *,
    sequence_length: int,
    micro_batch_size: int,
    lora_rank: int,
    gradient_checkpointing: bool,
) -> dict[str, float]:
    """The terms of :func:`training_memory_gib`, in bytes (before slack and context)."""
    _positive(sequence_length=sequence_length, micro_batch_size=micro_batch_size)
    return {
        "weights": BF16_BYTES * facts.parameters,
        "adapter": LORA_BYTES_PER_PARAM * facts.lora_parameters(lora_rank),
        "activations": activation_bytes(
            facts,
            sequence_length=sequence_length,
            micro_batch_size=micro_batch_size,
            gradient_checkpointing=gradient_checkpointing,
        ),
        "logits": LOGITS_BYTES * sequence_length * micro_batch_size * facts.vocab_size,
    }


def training_memory_gib(
    facts: ModelFacts,
    *,
    sequence_length: int,
    micro_batch_size: int,
    lora_rank: int,
    gradient_checkpointing: bool,
) -> float:
    """Per-GPU memory for LoRA training: (weights + adapter + activations + logits) * 1.1 + 1 GiB.

    See the module docstring for each term. Data-parallel training keeps a full replica per GPU, so
    the figure is per GPU whatever the GPU count.
    """
    parts = training_memory_breakdown(
        facts,
        sequence_length=sequence_length,
        micro_batch_size=micro_batch_size,
        lora_rank=lora_rank,
        gradient_checkpointing=gradient_checkpointing,
    )
    return _with_overhead(sum(parts.values()))


def kv_cache_bytes(facts: ModelFacts, *, context_length: int, batch: int = 1) -> float:
    """2 * L * a_kv * head_dim * context * batch * 2 B (keys and values in bf16)."""
    _positive(context_length=context_length, batch=batch)
    return 2 * facts.layers * facts.kv_dim * context_length * batch * BF16_BYTES


def serving_memory_gib(facts: ModelFacts, *, context_length: int, batch: int = 1) -> float:
    """Single-GPU serving memory: (2 B * N + KV cache) * 1.1 + 1 GiB."""
    weights = BF16_BYTES * facts.parameters
    return _with_overhead(weights + kv_cache_bytes(facts, context_length=context_length, batch=batch))


def training_flops(facts: ModelFacts, *, tokens: float, gradient_checkpointing: bool = True) -> float:
    """LoRA training FLOPs: 4*N*tokens, 6*N*tokens with gradient checkpointing."""
    per = FLOPS_PER_PARAM_TOKEN + (RECOMPUTE_FLOPS_PER_PARAM_TOKEN if gradient_checkpointing else 0)
    return per * facts.parameters * tokens


def training_time_hours(
    facts: ModelFacts,
    gpu: GPULike,
    gpu_count: int,
    *,
    tokens: float,
    mfu: float,
    gradient_checkpointing: bool = True,
) -> float:
    """t = c*N*tokens / (gpu_count * bf16_dense_tflops*1e12 * mfu) / 3600; c = 4, 6 with checkpointing."""
    _positive(gpu_count=gpu_count, mfu=mfu, bf16_dense_tflops=gpu.bf16_dense_tflops)
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    flops = training_flops(facts, tokens=tokens, gradient_checkpointing=gradient_checkpointing)
    return flops / (gpu_count * gpu.bf16_dense_tflops * 1e12 * mfu) / 3600


def tokens_for(target_samples: int, epochs: int, tokens_per_sample: float) -> float:
    """Tokens a training run processes: target_samples * epochs * tokens_per_sample.

    Pass the configured sequence length as tokens_per_sample for an upper bound (packed or
    padded-to-length batches), or the mean sample length when the data set is known.
    """
    if target_samples < 0 or epochs < 0 or tokens_per_sample < 0:
        raise ValueError("target_samples, epochs and tokens_per_sample must be >= 0")
    return float(target_samples) * epochs * tokens_per_sample


def decode_tokens_per_second(
    facts: ModelFacts, gpu: GPULike, *, efficiency: float = DECODE_EFFICIENCY
) -> float:
    """r = bandwidth [GB/s] * 1e9 * efficiency / (2 B * N): batch-1 decode reads every weight per token."""
    _positive(efficiency=efficiency, memory_bandwidth_gbps=gpu.memory_bandwidth_gbps)
    return gpu.memory_bandwidth_gbps * 1e9 * efficiency / (BF16_BYTES * facts.parameters)
