"""Estimators, checked against figures worked out by hand (arithmetic in the comments).

GiB = 2^30 = 1,073,741,824 bytes. Overhead: total = bytes * 1.1 / GiB + 1.0.
GPUs from the real catalog: RTX 4090 24 GiB / 165.2 TFLOPS / 1008 GB/s, H20 96 GiB / 148 TFLOPS / 4000 GB/s.
Students from a spec with parameters only: 3.2e9 takes Llama-3.2-3B's shape (L=28, h=3072, a=24,
8 KV heads of 128, I=8192, V=128256); 8.03e9 takes Llama-3.1-8B's (L=32, h=4096, a=32, 8 KV heads,
I=14336, V=128256).
"""

from __future__ import annotations

import pytest

from stratos.catalog.gpus import GPUS
from stratos.decide.estimate import (
    decode_tokens_per_second,
    kv_cache_bytes,
    serving_memory_gib,
    tokens_for,
    training_memory_breakdown,
    training_memory_gib,
    training_time_hours,
)
from support.models import facts

RTX4090 = GPUS["RTX 4090"]
H20 = GPUS["H20"]
DEFAULTS = {"sequence_length": 1024, "micro_batch_size": 4, "lora_rank": 16}  # the API's defaults


S3B = facts(3.2e9)
S8B = facts(8.03e9)


def test_catalog_figures_used() -> None:
    assert (RTX4090.memory_gib, RTX4090.bf16_dense_tflops, RTX4090.memory_bandwidth_gbps) == (24, 165.2, 1008)
    assert (H20.memory_gib, H20.bf16_dense_tflops, H20.memory_bandwidth_gbps) == (96, 148, 4000)


def test_3b_lora_training_terms_by_hand() -> None:
    parts = training_memory_breakdown(S3B, gradient_checkpointing=True, **DEFAULTS)
    # weights: 2 B * 3.2e9 = 6,400,000,000
    assert parts["weights"] == 6_400_000_000
    # adapter, r=16, per layer: q 16*(3072+3072)=98304, k 16*(3072+1024)=65536, v 65536, o 98304,
    # gate/up/down 16*(3072+8192)=180224 each -> 868,352; *28 layers = 24,313,856 params; *16 B
    assert S3B.lora_parameters(16) == 24_313_856
    assert parts["adapter"] == 389_021_696
    # activations: s*b*h = 1024*4*3072 = 12,582,912
    #   checkpointed inputs 2 * 12,582,912 * 28 = 704,643,072
    #   one layer 12,582,912 * (34 + 5*24*1024/3072 = 34 + 40) = 931,135,488
    assert parts["activations"] == 704_643_072 + 931_135_488
    # logits: 8 B * 1024 * 4 * 128256 = 4,202,692,608
    assert parts["logits"] == 4_202_692_608


def test_3b_fits_both_4090_and_h20_with_checkpointing() -> None:
    # sum 6,400,000,000 + 389,021,696 + 1,635,778,560 + 4,202,692,608 = 12,627,492,864 B = 11.7603 GiB
    # * 1.1 = 12.9363 + 1.0 = 13.936 GiB: fits the 24 GiB RTX 4090 and the 96 GiB H20
    need = training_memory_gib(S3B, gradient_checkpointing=True, **DEFAULTS)
    assert need == pytest.approx(13.936, abs=1e-3)
    assert need <= RTX4090.memory_gib and need <= H20.memory_gib


def test_3b_without_checkpointing_fits_h20_only() -> None:
    # activations: all 28 layers, 931,135,488 * 28 = 26,071,793,664
    # sum 6,400,000,000 + 389,021,696 + 26,071,793,664 + 4,202,692,608 = 37,063,507,968 B = 34.518 GiB
    # * 1.1 + 1 = 38.970 GiB: over the RTX 4090's 24 GiB, under the H20's 96 GiB
    need = training_memory_gib(S3B, gradient_checkpointing=False, **DEFAULTS)
    assert need == pytest.approx(38.970, abs=1e-3)
    assert RTX4090.memory_gib < need <= H20.memory_gib


def test_8b_does_not_fit_a_24_gib_card() -> None:
    # weights 2 * 8.03e9 = 16,060,000,000
    # adapter per layer 16*(8192 + 5120 + 5120 + 8192 + 3*18432) = 1,310,720; *32 = 41,943,040 params
    #   * 16 B = 671,088,640
    # activations s*b*h = 1024*4*4096 = 16,777,216; inputs 2*16,777,216*32 = 1,073,741,824;
    #   one layer 16,777,216 * (34 + 5*32*1024/4096 = 74) = 1,241,513,984
    # logits 4,202,692,608
    # sum 23,249,037,056 B = 21.652 GiB * 1.1 + 1 = 24.818 GiB > 24 GiB (fits the 96 GiB H20)
    need = training_memory_gib(S8B, gradient_checkpointing=True, **DEFAULTS)
    assert need == pytest.approx(24.818, abs=1e-3)
    assert RTX4090.memory_gib < need <= H20.memory_gib


def test_serving_memory_by_hand() -> None:
    # 3B, context 4096: KV = 2 * 28 * (8*128) * 4096 * 1 * 2 B = 469,762,048
    assert kv_cache_bytes(S3B, context_length=4096) == 469_762_048
    # (6,400,000,000 + 469,762,048) = 6,869,762,048 B = 6.398 GiB * 1.1 + 1 = 8.038 GiB
    assert serving_memory_gib(S3B, context_length=4096) == pytest.approx(8.038, abs=1e-3)
    # 8B: KV = 2*32*1024*4096*2 = 536,870,912; 16,596,870,912 B = 15.457 GiB * 1.1 + 1 = 18.003 GiB
    assert serving_memory_gib(S8B, context_length=4096) == pytest.approx(18.003, abs=1e-3)
    # batch scales only the KV cache: batch 4 adds 3 * 469,762,048 B = 1.3125 GiB, * 1.1 = 1.444 GiB
    assert serving_memory_gib(S3B, context_length=4096, batch=4) == pytest.approx(8.038 + 1.444, abs=1e-3)


def test_tokens_for() -> None:
    assert tokens_for(10_000, 1, 1024) == 10_240_000
    assert tokens_for(10_000, 3, 512) == 15_360_000
    with pytest.raises(ValueError):
        tokens_for(-1, 1, 1)


def test_training_time_h20_vs_4090() -> None:
    tokens = tokens_for(10_000, 1, 1024)  # 1.024e7
    # 6 * 3.2e9 * 1.024e7 = 1.96608e17 FLOPs (gradient checkpointing: 4N + 2N recompute)
    # 4090: 165.2e12 * 0.35 = 5.782e13 FLOP/s -> 3400.35 s = 0.94454 h
    t_4090 = training_time_hours(S3B, RTX4090, 1, tokens=tokens, mfu=0.35)
    assert t_4090 == pytest.approx(0.94454, abs=1e-5)
    # H20: 148e12 * 0.35 = 5.18e13 FLOP/s -> 3795.52 s = 1.05431 h (H20 has less compute than a 4090)
    t_h20 = training_time_hours(S3B, H20, 1, tokens=tokens, mfu=0.35)
    assert t_h20 == pytest.approx(1.05431, abs=1e-5)
    # without checkpointing 4N: 2/3 of it; two GPUs: half of it
    no_ckpt = training_time_hours(S3B, H20, 1, tokens=tokens, mfu=0.35, gradient_checkpointing=False)
    assert no_ckpt == pytest.approx(1.05431 * 4 / 6, abs=1e-5)
    assert training_time_hours(S3B, H20, 2, tokens=tokens, mfu=0.35) == pytest.approx(1.05431 / 2, abs=1e-5)
    with pytest.raises(ValueError):
        training_time_hours(S3B, H20, 0, tokens=tokens, mfu=0.35)


def test_decode_tokens_per_second() -> None:
    # 3B: 1008e9 * 0.6 / (2 * 3.2e9) = 604.8e9 / 6.4e9 = 94.5 tok/s on a 4090
    assert decode_tokens_per_second(S3B, RTX4090) == pytest.approx(94.5)
    # H20: 4000e9 * 0.6 / 6.4e9 = 375 tok/s
    assert decode_tokens_per_second(S3B, H20) == pytest.approx(375.0)
    # 8B on a 4090: 604.8e9 / 16.06e9 = 37.659 tok/s
    assert decode_tokens_per_second(S8B, RTX4090) == pytest.approx(37.659, abs=1e-3)


def test_memory_grows_with_sequence_batch_and_rank() -> None:
    base = training_memory_gib(S3B, gradient_checkpointing=True, **DEFAULTS)
    for change in ({"sequence_length": 2048}, {"micro_batch_size": 8}, {"lora_rank": 64}):
        assert training_memory_gib(S3B, gradient_checkpointing=True, **{**DEFAULTS, **change}) > base
    with pytest.raises(ValueError):
        training_memory_gib(S3B, gradient_checkpointing=True, **{**DEFAULTS, "sequence_length": 0})
