"""Command lines of the two serving engines, pure and shared by the manifests and the local runner.

vLLM (``vllm serve``, GPU) serves the base model with the trained LoRA adapter attached under the
student's name, or merged weights directly. Its ``--max-lora-rank`` accepts only a fixed set of values
(8, 16, 32, 64, 128, 256 in every release that has LoRA; recent ones add 320 and 512), so the adapter's
rank is rounded up to the next accepted one: a larger maximum only reserves more buffer space.

``transformers serve`` (CPU-capable) preloads one model given as its positional argument and then
answers only requests whose ``model`` equals that very string (HTTP 400 otherwise), with no option to
rename it. It cannot load a PEFT adapter directory (it reads ``config.json`` with ``AutoConfig``, which
an adapter directory lacks), so this engine serves merged weights. To give clients a clean model name
instead of a storage path, the model directory is made to appear as ``<workdir>/<name>`` (a volume
mount in Kubernetes, a symlink locally) and the server is started in ``<workdir>`` with ``<name>``:
``from_pretrained`` resolves a relative directory before it would ever consult the Hub.

Both engines answer ``GET /health`` with 200 only once the model is loaded (transformers loads the
forced model before the HTTP server starts). transformers' ``GET /v1/models`` lists the Hugging Face
*cache*, not the served model (and answers 500 when there is no cache), so nothing probes it.
"""

from __future__ import annotations

import re

SERVING_PORT = 8000
HEALTH_PATH = "/health"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256)
#: A served model name: what clients put in ``model``. No ``/``, ``@`` or ``:`` (transformers serve
#: splits model ids at ``@`` for a revision and at ``:`` for a GGUF file), no leading dot.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that fits an adapter of rank ``rank``."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    for accepted in VLLM_LORA_RANKS:
        if rank <= accepted:
            return accepted
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")


def check_model_name(name: str) -> str:
    if not MODEL_NAME_PATTERN.match(name):
        raise ValueError(f"served model name {name!r} must match {MODEL_NAME_PATTERN.pattern}")
    return name


def model_location(uri: str) -> str:
    """What an engine loads for a model URI: ``hf://ORG/NAME`` -> ``ORG/NAME``, ``file:///p`` -> ``/p``.

    Absolute paths (on the storage volume) stay as they are. ``s3://`` cannot be handed to either
    engine as a model; such a student is served from merged weights written to the storage instead.
    """
    if uri.startswith("hf://"):
        return uri.removeprefix("hf://").strip("/")
    if uri.startswith("file://"):
        return "/" + uri.removeprefix("file://").lstrip("/")
    if uri.startswith("/"):
        return uri
    raise ValueError(f"cannot serve a model from {uri!r}: give an absolute path, file:// or hf:// URI")


def is_local(location: str) -> bool:
    """Whether a model location is a directory (served offline) rather than a Hub repository."""
    return location.startswith("/")


def vllm_args(
    *,
    model: str,
    model_name: str,
    max_model_len: int,
    adapter_path: str | None = None,
    lora_rank: int = 16,
    tensor_parallel: int = 1,
    host: str = "0.0.0.0",
    port: int = SERVING_PORT,
) -> list[str]:
    """Arguments after ``vllm serve``.

    With ``adapter_path`` the base model ``model`` is served as ``<model_name>-base`` and the adapter as
    ``<model_name>`` (``--lora-modules NAME=PATH``), so clients ask for the student by its name either way.
    """
    check_model_name(model_name)
    args = [model, "--host", host, "--port", str(port), "--max-model-len", str(max_model_len)]
    if adapter_path is None:
        args += ["--served-model-name", model_name]
    else:
        args += [
            "--served-model-name",
            f"{model_name}-base",
            "--enable-lora",
            "--max-loras",
            "1",
            "--max-lora-rank",
            str(vllm_lora_rank(lora_rank)),
            "--lora-modules",
            f"{model_name}={adapter_path}",
        ]
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    return args


def transformers_args(
    model: str,
    *,
    host: str = "0.0.0.0",
    port: int = SERVING_PORT,
    device: str = "cpu",
    dtype: str = "auto",
) -> list[str]:
    """Arguments after ``transformers serve`` (transformers 5.x: the model is positional)."""
    return [
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--device",
        device,
        "--dtype",
        dtype,
        "--log-level",
        "info",
    ]
