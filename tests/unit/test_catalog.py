"""The GPU catalogue: every model present with sane figures, GFD product strings mapped right."""

from __future__ import annotations

import math

import pytest

from stratos.catalog.gpus import GPUS, GPUSpec, lookup_gpu, mig_slice

CANONICAL = [
    "RTX 3090",
    "RTX 4090",
    "RTX 6000 Ada",
    "L4",
    "L20",
    "L40S",
    "A10",
    "H20",
    "A100 40GB",
    "A100 80GB",
    "H100",
    "H200",
]

# name -> (memory GiB, dense BF16 TFLOPS, bandwidth GB/s): the datasheet figures the module docstring cites.
DATASHEET = {
    "RTX 3090": (24, 71, 936),
    "RTX 4090": (24, 165.2, 1008),
    "RTX 6000 Ada": (48, 364.2, 960),
    "L4": (24, 121, 300),
    "L20": (48, 119.5, 864),
    "L40S": (48, 362.05, 864),
    "A10": (24, 125, 600),
    "H20": (96, 148, 4000),
    "A100 40GB": (40, 312, 1555),
    "A100 80GB": (80, 312, 2039),
    "H100": (80, 989, 3350),
    "H200": (141, 989, 4800),
}


def test_all_twelve_models_present_with_positive_figures() -> None:
    assert sorted(GPUS) == sorted(CANONICAL)
    for name, spec in GPUS.items():
        assert isinstance(spec, GPUSpec)
        assert spec.name == name
        figures = (spec.memory_gib, spec.bf16_dense_tflops, spec.memory_bandwidth_gbps)
        figures += (spec.default_hourly_usd,)
        for value in figures:
            assert isinstance(value, float)
            assert math.isfinite(value) and value > 0
        assert spec.source, f"{name} must cite its source"


@pytest.mark.parametrize("name", CANONICAL)
def test_datasheet_figures(name: str) -> None:
    memory, tflops, bandwidth = DATASHEET[name]
    spec = GPUS[name]
    assert spec.memory_gib == memory
    assert spec.bf16_dense_tflops == pytest.approx(tflops)
    assert spec.memory_bandwidth_gbps == bandwidth


def test_specs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        GPUS["L4"].memory_gib = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("product", "expected"),
    [
        ("NVIDIA-GeForce-RTX-4090", "RTX 4090"),
        ("NVIDIA-GeForce-RTX-3090", "RTX 3090"),
        ("NVIDIA-RTX-6000-Ada-Generation", "RTX 6000 Ada"),
        ("NVIDIA-L4", "L4"),
        ("NVIDIA-L20", "L20"),
        ("NVIDIA-L40S", "L40S"),
        ("NVIDIA-A10", "A10"),
        ("NVIDIA-H20", "H20"),
        ("NVIDIA-A100-SXM4-40GB", "A100 40GB"),
        ("NVIDIA-A100-PCIE-40GB", "A100 40GB"),
        ("NVIDIA-A100-SXM4-80GB", "A100 80GB"),
        ("NVIDIA-A100-80GB-PCIe", "A100 80GB"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("NVIDIA-H100-SXM5-80GB", "H100"),
        ("NVIDIA-H200", "H200"),
        ("NVIDIA-H200-141GB-HBM3e", "H200"),
        # older drivers: no NVIDIA- prefix
        ("A100-SXM4-40GB", "A100 40GB"),
        ("GeForce-RTX-4090", "RTX 4090"),
        # time-slicing suffix
        ("NVIDIA-L4-SHARED", "L4"),
        ("NVIDIA-A100-SXM4-80GB-SHARED", "A100 80GB"),
        # canonical names and simple forms
        ("RTX 4090", "RTX 4090"),
        ("rtx4090", "RTX 4090"),
        ("A100-80GB", "A100 80GB"),
        ("a100 40gb", "A100 40GB"),
        ("h100", "H100"),
        ("L40S", "L40S"),
        ("l40s-48gb", "L40S"),
        ("RTX 6000 Ada", "RTX 6000 Ada"),
        ("  H200  ", "H200"),
    ],
)
def test_lookup_maps_product_strings(product: str, expected: str) -> None:
    spec = lookup_gpu(product)
    assert spec is not None, product
    assert spec.name == expected
    assert spec is GPUS[expected]


@pytest.mark.parametrize(
    "product",
    [
        "",
        "unknown",
        "NVIDIA-Tesla-T4",
        "NVIDIA-L40",  # L40 is not L40S
        "NVIDIA-A10G",  # AWS variant, different tensor throughput
        "NVIDIA-GeForce-RTX-3090-Ti",
        "NVIDIA-GeForce-RTX-4090-D",
        "NVIDIA-H100-PCIe",
        "NVIDIA-H100-NVL",
        "NVIDIA-H200-NVL",
        "NVIDIA-H800",
        "A100",  # ambiguous: 40 or 80 GB
        "NVIDIA-L4-MIG-1g.5gb",  # L4 has no MIG
        "NVIDIA-A100-SXM4-40GB-MIG-9g.5gb",  # more slices than the GPU has
    ],
)
def test_lookup_unknown_is_none(product: str) -> None:
    assert lookup_gpu(product) is None


def test_lookup_non_string_is_none() -> None:
    assert lookup_gpu(None) is None  # type: ignore[arg-type]


def test_mig_suffix_gives_slice_figures() -> None:
    # A100 40GB, 1g.5gb: 1/7 of the compute, 5 of 40 GB -> 1/8 of the bandwidth.
    spec = lookup_gpu("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb")
    assert spec is not None
    assert spec.name == "A100 40GB MIG 1g.5gb"
    assert spec.memory_gib == 5.0
    assert spec.bf16_dense_tflops == pytest.approx(312 / 7)
    assert spec.memory_bandwidth_gbps == pytest.approx(1555 / 8)
    assert spec.default_hourly_usd == pytest.approx(1.30 / 7, abs=1e-4)
    # MIG + time-slicing, no prefix, compute-instance profile
    shared = lookup_gpu("A100-SXM4-40GB-MIG-1g.5gb-SHARED")
    assert shared == spec
    h100 = lookup_gpu("NVIDIA-H100-80GB-HBM3-MIG-3g.40gb")
    assert h100 is not None and h100.bf16_dense_tflops == pytest.approx(989 * 3 / 7)
    ci = lookup_gpu("NVIDIA-A100-SXM4-40GB-MIG-1c.3g.20gb")
    assert ci is not None and ci.bf16_dense_tflops == pytest.approx(312 / 7)


def test_mig_slice_rejects_impossible_profiles() -> None:
    assert mig_slice(GPUS["L4"], 1, 5) is None
    assert mig_slice(GPUS["A100 40GB"], 0, 5) is None
    assert mig_slice(GPUS["A100 40GB"], 1, 80) is None
