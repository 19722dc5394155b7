"""GPU catalog: the datasheet figures the decisions need, per GPU model.

Every decision that reasons about hardware (server selection, training-time and throughput estimates,
memory fit) reads its numbers from here, so the figures are stated once, with their meaning and source.

What each figure means:

- ``memory_gib``: the memory capacity as marketed ("24 GB" -> 24.0). Vendors market binary gigabytes for
  GPU memory, so the number is used as GiB. A node's own ``nvidia.com/gpu.memory`` label (MiB, reported by
  the driver) takes precedence over this figure when present.
- ``bf16_dense_tflops``: peak dense BF16 Tensor Core throughput in TFLOPS, *without* structured sparsity
  (datasheets mark the sparse figure, twice as large, with an asterisk). For GeForce cards the whitepaper
  lists two BF16/FP16 figures; the one used is "with FP32 accumulate", which is what mixed-precision
  training uses. Professional and data-centre parts run FP32 accumulate at full rate.
- ``memory_bandwidth_gbps``: peak memory bandwidth in GB/s (decimal, as datasheets state it).
- ``default_hourly_usd``: an *indicative* on-demand rental price per GPU per hour in USD (rounded, typical of
  public cloud and GPU-marketplace list prices in 2024-2025). It is a fallback only: a node's
  ``stratos.io/hourly-cost`` label or annotation always wins. It is not a quote.

Sources (vendor documents; figures cross-checked against published reproductions of the tables):

- RTX 3090: NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A (GeForce RTX 3090): 24 GB GDDR6X,
  936 GB/s, peak BF16 Tensor TFLOPS with FP32 accumulate 71 (142 sparse).
- RTX 4090: NVIDIA Ada GPU Architecture whitepaper (v2.01), Appendix A (GeForce RTX 4090): 24 GB GDDR6X,
  1008 GB/s, peak BF16 Tensor TFLOPS with FP32 accumulate 165.2 (330.4 sparse).
- RTX 6000 Ada: NVIDIA Ada GPU Architecture whitepaper, RTX 6000 Ada column: 364.2 (728.5 sparse);
  NVIDIA RTX 6000 Ada Generation datasheet: 48 GB GDDR6 ECC, 960 GB/s.
- L4: NVIDIA L4 Tensor Core GPU datasheet: 24 GB GDDR6, 300 GB/s, BF16 242 TFLOPS with sparsity -> 121
  dense.
- L20: NVIDIA L20 product brief (China market): 48 GB GDDR6, 864 GB/s, FP16/BF16 Tensor 119.5 TFLOPS dense.
- L40S: NVIDIA L40S datasheet: 48 GB GDDR6 ECC, 864 GB/s, BF16 Tensor 362.05 TFLOPS dense (733 sparse).
- A10: NVIDIA A10 Tensor Core GPU datasheet: 24 GB GDDR6, 600 GB/s, BF16 125 TFLOPS dense (250 sparse).
- H20: NVIDIA H20 product brief: 96 GB HBM3, 4.0 TB/s, FP16/BF16 148 TFLOPS dense.
- A100 40GB / 80GB: NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS dense (624 sparse); 40 GB HBM2
  at 1,555 GB/s; 80 GB HBM2e at 2,039 GB/s (SXM; the 80 GB PCIe card states 1,935 GB/s and is mapped
  here too).
- H100 (SXM): NVIDIA H100 Tensor Core GPU datasheet, SXM column: 80 GB, 3.35 TB/s, BF16 1,979 TFLOPS with
  sparsity -> 989 dense (the Hopper whitepaper states 989.4).
- H200 (SXM): NVIDIA H200 Tensor Core GPU datasheet, SXM column: 141 GB HBM3e, 4.8 TB/s, BF16 1,979 TFLOPS
  with sparsity -> 989 dense.

Product strings: NVIDIA GPU Feature Discovery (GFD) labels nodes with ``nvidia.com/gpu.product`` such as
``NVIDIA-GeForce-RTX-4090``, ``NVIDIA-A100-SXM4-80GB`` or ``NVIDIA-H100-80GB-HBM3``; older drivers omit the
``NVIDIA-`` prefix; time-slicing appends ``-SHARED``; the MIG "single" strategy appends the profile
(``A100-SXM4-40GB-MIG-1g.5gb``). :func:`lookup_gpu` understands all of these. Variants whose figures differ
materially from the catalogued part (RTX 3090 Ti, RTX 4090 D, L40, A10G, H100 PCIe/NVL, H200 NVL, H800, ...)
are *not* mapped to a look-alike: they return ``None``, and the node can be labelled
``stratos.io/gpu-product`` with the catalogue name that should stand for it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass

__all__ = ["GPUS", "GPUSpec", "lookup_gpu", "mig_slice"]


@dataclass(frozen=True)
class GPUSpec:
    """Datasheet figures of one GPU model (see the module docstring for what each figure means)."""

    name: str
    memory_gib: float
    bf16_dense_tflops: float
    memory_bandwidth_gbps: float
    default_hourly_usd: float
    aliases: tuple[str, ...] = ()
    source: str = ""
    #: MIG compute slices of the full GPU (7 on A100/H100/H200/H20); 0 when the GPU has no MIG.
    mig_slices: int = 0


def _spec(
    name: str,
    memory_gib: float,
    tflops: float,
    bandwidth: float,
    price: float,
    aliases: tuple[str, ...],
    source: str,
    mig_slices: int = 0,
) -> GPUSpec:
    return GPUSpec(
        name, float(memory_gib), float(tflops), float(bandwidth), float(price), aliases, source, mig_slices
    )


_AMPERE_WP = "NVIDIA Ampere GA102 GPU Architecture whitepaper, Appendix A"
_ADA_WP = "NVIDIA Ada GPU Architecture whitepaper v2.01, Appendix A"

_CATALOG: tuple[GPUSpec, ...] = (
    _spec("RTX 3090", 24, 71.0, 936, 0.22, ("GeForce RTX 3090",), _AMPERE_WP),
    _spec("RTX 4090", 24, 165.2, 1008, 0.35, ("GeForce RTX 4090",), _ADA_WP),
    _spec(
        "RTX 6000 Ada",
        48,
        364.2,
        960,
        0.80,
        ("RTX 6000 Ada Generation", "RTX 6000 Ada"),
        _ADA_WP + "; NVIDIA RTX 6000 Ada Generation datasheet",
    ),
    _spec("L4", 24, 121.0, 300, 0.45, (), "NVIDIA L4 Tensor Core GPU datasheet (242 TFLOPS sparse / 2)"),
    _spec("L20", 48, 119.5, 864, 0.60, (), "NVIDIA L20 product brief"),
    _spec("L40S", 48, 362.05, 864, 1.00, (), "NVIDIA L40S datasheet"),
    _spec("A10", 24, 125.0, 600, 0.60, (), "NVIDIA A10 Tensor Core GPU datasheet"),
    _spec("H20", 96, 148.0, 4000, 1.20, ("H20 HBM3",), "NVIDIA H20 product brief", mig_slices=7),
    _spec(
        "A100 40GB",
        40,
        312.0,
        1555,
        1.30,
        ("A100 SXM4 40GB", "A100 PCIE 40GB", "A100 40GB PCIE", "A100 40GB SXM4", "A100 SXM 40GB"),
        "NVIDIA A100 Tensor Core GPU datasheet (40GB column)",
        mig_slices=7,
    ),
    _spec(
        "A100 80GB",
        80,
        312.0,
        2039,
        1.60,
        ("A100 SXM4 80GB", "A100 80GB PCIE", "A100 PCIE 80GB", "A100 80GB SXM4", "A100 SXM 80GB"),
        "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM column)",
        mig_slices=7,
    ),
    _spec(
        "H100",
        80,
        989.0,
        3350,
        2.50,
        ("H100 SXM", "H100 SXM5", "H100 80GB HBM3", "H100 SXM5 80GB", "H100 SXM 80GB", "H100 SXM5 HBM3"),
        "NVIDIA H100 Tensor Core GPU datasheet (SXM column; 1,979 TFLOPS sparse / 2)",
        mig_slices=7,
    ),
    _spec(
        "H200",
        141,
        989.0,
        4800,
        3.50,
        ("H200 SXM", "H200 141GB HBM3E", "H200 SXM 141GB", "H200 HBM3E"),
        "NVIDIA H200 Tensor Core GPU datasheet (SXM column; 1,979 TFLOPS sparse / 2)",
        mig_slices=7,
    ),
)

#: The catalogue, keyed by canonical name.
GPUS: dict[str, GPUSpec] = {spec.name: spec for spec in _CATALOG}

# Words that carry no model information in product strings ("NVIDIA-GeForce-RTX-4090",
# "NVIDIA-RTX-6000-Ada-Generation", "Tesla-T4").
_NOISE = {"NVIDIA", "GEFORCE", "TESLA", "GENERATION"}
_SEPARATORS = re.compile(r"[\s_\-/]+")
# "-MIG-1g.5gb", "-MIG-3g.40gb+me", "-MIG-1c.3g.20gb" (compute-instance profile); matched after upper().
_MIG = re.compile(r"[\s_\-]MIG[\s_\-]+(?:(\d+)C\.)?(\d+)G\.(\d+(?:\.\d+)?)GB(?:\+ME)?$")
_SHARED = re.compile(r"[\s_\-]SHARED$")


def _key(text: str) -> str:
    """Compact, case-free key of a product string: separators and vendor words removed."""
    tokens = [t for t in _SEPARATORS.split(text.strip().upper()) if t and t not in _NOISE]
    return "".join(tokens)


def _index() -> dict[str, GPUSpec]:
    index: dict[str, GPUSpec] = {}
    for spec in _CATALOG:
        mem = f"{int(spec.memory_gib)}GB"
        for alias in (spec.name, *spec.aliases):
            for text in (alias, f"{alias} {mem}"):
                key = _key(text)
                other = index.setdefault(key, spec)
                if other is not spec:  # pragma: no cover - guarded by the catalogue tests
                    raise AssertionError(f"alias {text!r} maps to both {other.name} and {spec.name}")
    return index


_INDEX = _index()


def mig_slice(parent: GPUSpec, compute_slices: int, memory_gb: float) -> GPUSpec | None:
    """Figures of one MIG instance of ``parent`` with ``compute_slices`` of its compute slices.

    Compute (and the indicative price) scale with the share of compute slices, ``g / parent.mig_slices``;
    bandwidth scales with the share of memory, ``memory_gb / parent.memory_gib`` (an A100 40GB has eight
    5 GB memory slices, each with an eighth of the bandwidth). Returns None if the parent has no MIG or the
    profile does not fit it.
    """
    if parent.mig_slices <= 0 or not 0 < compute_slices <= parent.mig_slices:
        return None
    if not 0 < memory_gb <= parent.memory_gib:
        return None
    share = compute_slices / parent.mig_slices
    mem_share = memory_gb / parent.memory_gib
    profile = f"{compute_slices}g.{memory_gb:g}gb"
    return dataclasses.replace(
        parent,
        name=f"{parent.name} MIG {profile}",
        memory_gib=float(memory_gb),
        bf16_dense_tflops=parent.bf16_dense_tflops * share,
        memory_bandwidth_gbps=parent.memory_bandwidth_gbps * mem_share,
        default_hourly_usd=round(parent.default_hourly_usd * share, 4),
        aliases=(),
        mig_slices=0,
    )


def lookup_gpu(product: str) -> GPUSpec | None:
    """The catalogue entry for a GPU product string, or None when the model is not catalogued.

    Accepts canonical names ("A100 80GB"), simple forms ("rtx4090", "a100-80gb") and GFD product strings
    ("NVIDIA-GeForce-RTX-4090", "NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"), with or without the
    ``NVIDIA-`` prefix. A ``-SHARED`` suffix (time-slicing) is ignored: the node still carries that GPU.
    A MIG suffix (``-MIG-1g.5gb``) yields the figures of one MIG instance (see :func:`mig_slice`), because
    with GFD's "single" MIG strategy each advertised GPU *is* such an instance.
    """
    if not isinstance(product, str):
        return None
    return _lookup(product)


@functools.lru_cache(maxsize=4096)
def _lookup(product: str) -> GPUSpec | None:
    """:func:`lookup_gpu` proper; cached because a cluster repeats a handful of product strings."""
    text = product.strip().upper()
    text = _SHARED.sub("", text)
    mig = _MIG.search(text)
    if mig:
        text = text[: mig.start()]
    spec = _INDEX.get(_key(text))
    if spec is None or mig is None:
        return spec
    compute = int(mig.group(1) or mig.group(2))
    return mig_slice(spec, compute, float(mig.group(3)))
