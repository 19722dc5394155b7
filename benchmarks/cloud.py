"""The simulated GPU cloud the benchmarks share, and small helpers (statistics, tables, JSON, machine).

The paper's cloud (PPIO, "3,732 servers distributed across multiple locations in Asia" with RTX 4090, H20,
RTX 6000 Ada, RTX 3090, L20 and A100 SXM4 GPUs) is not published beyond that sentence, so the inventory is
drawn from stated distributions:

- GPU model (per node, independently): RTX 4090 35%, RTX 3090 20%, H20 15%, RTX 6000 Ada 10%, L20 10%,
  A100 80GB 10% (the paper's six models; the shares are our assumption: consumer cards dominate GPU
  marketplaces such as PPIO's).
- GPUs per node: 1 (35%), 2 (25%), 4 (25%), 8 (15%).
- Per-GPU memory and BF16 TFLOPS: the catalogue's datasheet figures (``stratos.catalog.gpus``).
- Hourly cost of the node (USD): catalogue list price per GPU x GPU count x a log-normal market factor
  exp(N(0, 0.2^2)) (median 1, about +-20%).
- Latency to the user (ms): Uniform(5, 230), independent of the hardware; its mean (117.5 ms) matches the
  paper's random baseline's 118.53 ms in Table 4.

Every draw comes from a ``numpy.random.Generator`` seeded by the caller, so an inventory is reproducible.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from stratos.catalog.gpus import GPUS
from stratos.decide.nodes import NodeFacts

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

#: The paper's six GPU models with our assumed shares (catalogue name, share).
PAPER_GPU_MIX: tuple[tuple[str, float], ...] = (
    ("RTX 4090", 0.35),
    ("RTX 3090", 0.20),
    ("H20", 0.15),
    ("RTX 6000 Ada", 0.10),
    ("L20", 0.10),
    ("A100 80GB", 0.10),
)
#: GPUs per node and their probabilities.
GPU_COUNTS: tuple[tuple[int, float], ...] = ((1, 0.35), (2, 0.25), (4, 0.25), (8, 0.15))
COST_SIGMA = 0.2
LATENCY_MS = (5.0, 230.0)
#: GFD product strings, so that Node objects carry what GPU Feature Discovery would write.
GFD_PRODUCT = {
    "RTX 4090": "NVIDIA-GeForce-RTX-4090",
    "RTX 3090": "NVIDIA-GeForce-RTX-3090",
    "H20": "NVIDIA-H20",
    "RTX 6000 Ada": "NVIDIA-RTX-6000-Ada-Generation",
    "L20": "NVIDIA-L20",
    "A100 80GB": "NVIDIA-A100-SXM4-80GB",
}
PAPER_CLUSTER_SIZE = 3732

DISTRIBUTIONS = {
    "gpuModelShares": dict(PAPER_GPU_MIX),
    "gpusPerNode": {str(k): p for k, p in GPU_COUNTS},
    "hourlyCostUsd": f"catalogue price per GPU x GPUs x exp(N(0, {COST_SIGMA}^2))",
    "latencyMs": f"Uniform({LATENCY_MS[0]:g}, {LATENCY_MS[1]:g})",
}


def make_cloud(n: int, rng: np.random.Generator, *, prefix: str = "node") -> list[NodeFacts]:
    """``n`` NodeFacts drawn from the distributions in the module docstring."""
    names = [name for name, _ in PAPER_GPU_MIX]
    shares = np.array([share for _, share in PAPER_GPU_MIX])
    counts = np.array([c for c, _ in GPU_COUNTS])
    count_p = np.array([p for _, p in GPU_COUNTS])
    models = rng.choice(len(names), size=n, p=shares / shares.sum())
    gpus = rng.choice(counts, size=n, p=count_p / count_p.sum())
    factor = np.exp(rng.normal(0.0, COST_SIGMA, size=n))
    latency = rng.uniform(*LATENCY_MS, size=n)
    width = len(str(max(n - 1, 0)))
    nodes = []
    for i in range(n):
        spec = GPUS[names[int(models[i])]]
        count = int(gpus[i])
        nodes.append(
            NodeFacts(
                name=f"{prefix}-{i:0{width}d}",
                gpu=spec,
                gpu_count=count,
                gpu_memory_gib=spec.memory_gib,
                hourly_cost=round(float(spec.default_hourly_usd * count * factor[i]), 4),
                latency_ms=round(float(latency[i]), 2),
            )
        )
    return nodes


def node_object(facts: NodeFacts, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node as API JSON (GFD labels, ``stratos.io`` cost/latency annotations, Ready, GPU capacity)."""
    gpus = str(facts.gpu_count)
    resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": gpus}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": facts.name,
            "labels": {
                "kubernetes.io/hostname": facts.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": GFD_PRODUCT.get(facts.gpu.name, facts.gpu.name),
                "nvidia.com/gpu.count": gpus,
                "nvidia.com/gpu.memory": str(int(facts.gpu_memory_gib * 1024)),
                **(labels or {}),
            },
            "annotations": {
                "stratos.io/hourly-cost": f"{facts.hourly_cost:g}",
                "stratos.io/latency-ms": f"{facts.latency_ms:g}",
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


# ------------------------------------------------------------------------------------------ statistics


def summary(values: Sequence[float]) -> dict[str, float]:
    """median, p95, mean, min, max and the count of a sample."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return {"n": 0}
    return {
        "n": int(arr.size),
        "median": float(np.median(arr)),
        "p95": float(np.percentile(arr, 95)),
        "mean": float(arr.mean()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, left: Sequence[int] = (0,)) -> str:
    """A plain-text table; columns right-aligned except those in ``left`` (the first, by default)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, row in enumerate(cells):
        parts = [
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ reporting


def machine() -> dict[str, Any]:
    """Where the figures were taken: CPU model and count, load, Python and numpy versions."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "revision": revision(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadAverage": load,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "takenAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def finite(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data


def revision() -> str:
    """The checked-out commit, with "+dirty" when operator/ has uncommitted changes (what was measured)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "operator"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


def write_json(name: str, data: dict[str, Any], *, out_dir: Path | None = None) -> Path:
    """Write ``data`` to ``<out_dir or benchmarks/results>/<name>.json`` and return the path."""
    directory = out_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(finite(data), indent=2, allow_nan=False) + "\n")
    return path
