"""Student model facts: the few shape numbers the estimators need (README "The decisions" 4).

The memory, time and throughput estimates in :mod:`stratos.decide.estimate` need a decoder-only
transformer's parameter count N, layers L, hidden size h, vocabulary V, attention heads a, key/value
heads (grouped-query attention), head dimension and MLP intermediate size I. A DistillationJob
usually states only ``parameters`` (e.g. ``3.2e9``); :meth:`ModelFacts.from_spec` fills the rest with
the rules of thumb below and records which fields it filled (``inferred``) and from what (``basis``).
:meth:`ModelFacts.from_config_json` reads the exact figures from a Hugging Face ``config.json``.

Rules of thumb for unknown fields (``from_spec``):

1. Snap to a published shape. The reference table holds the LLaMA-3.x and Qwen-2.5 shapes (0.5B to
   70B; the paper's students are LLaMA-3.2-1B/3B, Qwen-2.5-1.5B and LLaMA-3.1-8B). The reference whose
   parameter count is nearest in log scale is used when it is within a factor of 1.5 of N; its hidden
   size, heads, key/value heads, intermediate size, vocabulary and embedding tying fill the unknowns.
2. Otherwise (N far from every reference) LLaMA-3-like proportions: per layer about 13 h^2 weights
   (q,o: 2h^2; k,v with h/4 key/value width: h^2/2; gated MLP with I = 3.5h: 10.5h^2) and a depth
   with h = 128 L, so N = 13 h^2 L = 13 h^3 / 128 and h = cbrt(128 N / 13), rounded to a multiple
   of 64 (at least 64). Head dimension 128 (64 below h = 1024), key/value heads a/4 (rounded down,
   at least 1), I = 3.5 h
   rounded to 64, vocabulary 128256 (32000 below 0.3B, where a large vocabulary could not fit),
   embeddings tied below 4B.
3. A field given in the spec always wins; fields derived from it follow it (a given hidden size that
   differs from the reference gets its own heads and a scaled intermediate size).
4. The depth L, when unknown, is solved from the parameter count given the rest of the shape:
   L = round((N - embeddings) / per-layer weights), at least 1. So the shape always accounts for N.

Weights memory is always computed from N itself, so the shape only affects second-order terms
(activations, logits, KV cache, LoRA adapter size).

Parameter counting (``count_parameters``) counts matrices and RMS/LayerNorm weights, not biases
(Qwen-2's q/k/v biases are 0.004% of its weights).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# Families whose MLP is two matrices (up, down) rather than the gated three (gate, up, down).
_NON_GATED_MODEL_TYPES = frozenset(
    {"gpt2", "gpt_neo", "gptj", "gpt_neox", "gpt_bigcode", "opt", "bloom", "falcon", "phi"}
)
# Families whose config class defaults tie_word_embeddings to False (transformers then still
# writes the key, but a hand-written config may omit it).
_UNTIED_BY_DEFAULT = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "phi3"})

_SNAP_FACTOR = 1.5
_SMALL_MODEL = 0.3e9
_TIED_BELOW = 4e9


@dataclass(frozen=True)
class _Shape:
    name: str
    layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_embeddings: bool


# Published configs (config.json of each model on the Hugging Face hub).
_REFERENCES: tuple[_Shape, ...] = (
    _Shape("qwen2.5-0.5b", 24, 896, 14, 2, 4864, 151936, True),
    _Shape("llama-3.2-1b", 16, 2048, 32, 8, 8192, 128256, True),
    _Shape("qwen2.5-1.5b", 28, 1536, 12, 2, 8960, 151936, True),
    _Shape("qwen2.5-3b", 36, 2048, 16, 2, 11008, 151936, True),
    _Shape("llama-3.2-3b", 28, 3072, 24, 8, 8192, 128256, True),
    _Shape("qwen2.5-7b", 28, 3584, 28, 4, 18944, 152064, False),
    _Shape("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, False),
    _Shape("qwen2.5-14b", 48, 5120, 40, 8, 13824, 152064, False),
    _Shape("qwen2.5-32b", 64, 5120, 40, 8, 27648, 152064, False),
    _Shape("llama-3.1-70b", 80, 8192, 64, 8, 28672, 128256, False),
)


class ModelSpecLike(Protocol):
    """What :meth:`ModelFacts.from_spec` reads (``spec.students[].model`` in the API)."""

    @property
    def parameters(self) -> float | None: ...
    @property
    def layers(self) -> int | None: ...
    @property
    def hidden_size(self) -> int | None: ...
    @property
    def vocab_size(self) -> int | None: ...
    @property
    def num_attention_heads(self) -> int | None: ...
    @property
    def num_key_value_heads(self) -> int | None: ...
    @property
    def intermediate_size(self) -> int | None: ...


def count_parameters(
    *,
    layers: int,
    hidden_size: int,
    vocab_size: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    intermediate_size: int,
    head_dim: int | None = None,
    tie_embeddings: bool = True,
    gated_mlp: bool = True,
    position_embeddings: int = 0,
) -> int:
    """Weights of a decoder-only transformer (matrices and norm weights, no biases).

    per layer = h*q + 2*h*kv + q*h  (q, k, v, o projections; q = a*head_dim, kv = a_kv*head_dim)
              + (3 if gated else 2)*h*I  (gate, up, down / up, down)
              + 2*h  (two norms)
    total     = L*per layer + V*h*(1 if tied else 2) + P*h (learned positions) + h (final norm)
    """
    hd = head_dim if head_dim is not None else hidden_size // num_attention_heads
    q_dim = num_attention_heads * hd
    kv_dim = num_key_value_heads * hd
    attention = hidden_size * q_dim + 2 * hidden_size * kv_dim + q_dim * hidden_size
    mlp = (3 if gated_mlp else 2) * hidden_size * intermediate_size
    per_layer = attention + mlp + 2 * hidden_size
    embeddings = vocab_size * hidden_size * (1 if tie_embeddings else 2) + position_embeddings * hidden_size
    return layers * per_layer + embeddings + hidden_size


@dataclass(frozen=True)
class ModelFacts:
    """Shape of a decoder-only student model, enough for the estimators."""

    parameters: float
    layers: int
    hidden_size: int
    vocab_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    head_dim: int
    tie_embeddings: bool = True
    gated_mlp: bool = True
    basis: str = "given"
    inferred: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.parameters > 0:
            raise ValueError(f"parameters must be > 0, got {self.parameters}")
        for name in (
            "layers",
            "hidden_size",
            "vocab_size",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "head_dim",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_key_value_heads > self.num_attention_heads:
            raise ValueError(
                f"num_key_value_heads ({self.num_key_value_heads}) exceeds "
                f"num_attention_heads ({self.num_attention_heads})"
            )

    @property
    def q_dim(self) -> int:
        """Width of the query projection's output (a * head_dim; usually h)."""
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection's output (a_kv * head_dim)."""
        return self.num_key_value_heads * self.head_dim

    def lora_targets(self) -> tuple[tuple[str, int, int], ...]:
        """(module, d_in, d_out) of every LoRA target in one layer.

        All linear layers, as is usual for LoRA SFT: q, k, v, o and the MLP's gate, up, down
        (up, down for a non-gated MLP).
        """
        h, i = self.hidden_size, self.intermediate_size
        targets = [
            ("q_proj", h, self.q_dim),
            ("k_proj", h, self.kv_dim),
            ("v_proj", h, self.kv_dim),
            ("o_proj", self.q_dim, h),
        ]
        if self.gated_mlp:
            targets.append(("gate_proj", h, i))
        targets += [("up_proj", h, i), ("down_proj", i, h)]
        return tuple(targets)

    def lora_parameters(self, rank: int) -> int:
        """LoRA adapter size: rank r adds A (d_in x r) and B (r x d_out), r*(d_in + d_out) per target."""
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        return self.layers * sum(rank * (d_in + d_out) for _, d_in, d_out in self.lora_targets())

    # ---------------------------------------------------------------- constructors

    @classmethod
    def from_spec(cls, model_spec: ModelSpecLike) -> ModelFacts:
        """Facts from a student's ``model`` block; unknown fields follow the module's rules of thumb."""
        return infer_facts(
            parameters=getattr(model_spec, "parameters", None),
            layers=getattr(model_spec, "layers", None),
            hidden_size=getattr(model_spec, "hidden_size", None),
            vocab_size=getattr(model_spec, "vocab_size", None),
            num_attention_heads=getattr(model_spec, "num_attention_heads", None),
            num_key_value_heads=getattr(model_spec, "num_key_value_heads", None),
            intermediate_size=getattr(model_spec, "intermediate_size", None),
        )

    @classmethod
    def from_config_json(
        cls, path_or_dict: str | os.PathLike[str] | Mapping[str, Any], *, parameters: float | None = None
    ) -> ModelFacts:
        """Facts from a Hugging Face ``config.json`` (a dict, the file, or the model directory).

        Key variants: llama/qwen2/mistral (``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
        ``num_key_value_heads``, ``intermediate_size``, optional ``head_dim``) and gpt2 (``n_layer``,
        ``n_embd``, ``n_head``, ``n_inner`` defaulting to 4h, learned ``n_positions``). A nested
        ``text_config`` (multimodal wrappers) is used when the top level has no shape. The parameter
        count is computed from the shape unless ``parameters`` is given.
        """
        config = dict(path_or_dict) if isinstance(path_or_dict, Mapping) else read_config_json(path_or_dict)
        return _facts_from_config(config, parameters)


def read_config_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``config.json`` (the only I/O in the decide package). A directory means ``<dir>/config.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    with p.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{p}: config.json must hold a JSON object")
    return data


def _first(config: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


def _facts_from_config(config: Mapping[str, Any], parameters: float | None) -> ModelFacts:
    if _first(config, "hidden_size", "n_embd", "d_model") is None and isinstance(
        config.get("text_config"), Mapping
    ):
        config = config["text_config"]
    model_type = str(config.get("model_type", "")).lower()
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _first(config, "hidden_size", "n_embd", "d_model")
    heads = _first(config, "num_attention_heads", "n_head", "num_heads")
    vocab = config.get("vocab_size")
    missing = [
        k
        for k, v in (
            ("layers", layers),
            ("hidden size", hidden),
            ("attention heads", heads),
            ("vocab_size", vocab),
        )
        if v is None
    ]
    if layers is None or hidden is None or heads is None or vocab is None:
        raise ValueError(f"config.json lacks {', '.join(missing)}")
    layers, hidden, heads, vocab = int(layers), int(hidden), int(heads), int(vocab)
    if config.get("multi_query") is True:
        kv_heads = 1
    else:
        kv_heads = int(_first(config, "num_key_value_heads", "n_head_kv", "num_kv_heads") or heads)
    gated = model_type not in _NON_GATED_MODEL_TYPES
    intermediate = _first(config, "intermediate_size", "n_inner", "ffn_dim")
    intermediate = int(intermediate) if intermediate is not None else 4 * hidden
    head_dim = int(config.get("head_dim") or hidden // heads)
    tie = config.get("tie_word_embeddings")
    tie = bool(tie) if tie is not None else model_type not in _UNTIED_BY_DEFAULT
    positions = int(config.get("n_positions") or 0)
    counted = count_parameters(
        layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        head_dim=head_dim,
        tie_embeddings=tie,
        gated_mlp=gated,
        position_embeddings=positions,
    )
    return ModelFacts(
        parameters=float(parameters) if parameters is not None else float(counted),
        layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        head_dim=head_dim,
        tie_embeddings=tie,
        gated_mlp=gated,
        basis=f"config.json ({model_type or 'unknown model_type'})",
    )


# -------------------------------------------------------------------- rules of thumb


def reference_parameters(shape: _Shape) -> int:
    return count_parameters(
        layers=shape.layers,
        hidden_size=shape.hidden_size,
        vocab_size=shape.vocab_size,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        intermediate_size=shape.intermediate_size,
        tie_embeddings=shape.tie_embeddings,
    )


def nearest_reference(parameters: float) -> tuple[_Shape, bool]:
    """The reference shape nearest in log parameter count, and whether it is within the snap factor."""
    best = min(_REFERENCES, key=lambda s: abs(math.log(parameters / reference_parameters(s))))
    close = abs(math.log(parameters / reference_parameters(best))) <= math.log(_SNAP_FACTOR)
    return best, close


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, round(x / multiple) * multiple)


def _default_heads(hidden: int) -> int:
    head_dim = 64 if hidden < 1024 else 128
    return max(1, hidden // head_dim)


def infer_facts(
    *,
    parameters: float | None,
    layers: int | None = None,
    hidden_size: int | None = None,
    vocab_size: int | None = None,
    num_attention_heads: int | None = None,
    num_key_value_heads: int | None = None,
    intermediate_size: int | None = None,
) -> ModelFacts:
    """Complete a partial shape with the rules of thumb in the module docstring."""
    given = {
        "layers": layers,
        "hidden_size": hidden_size,
        "vocab_size": vocab_size,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "intermediate_size": intermediate_size,
    }
    if parameters is None:
        unknown = [k for k, v in given.items() if v is None and k in ("layers", "hidden_size", "vocab_size")]
        if unknown:
            raise ValueError(f"model needs parameters, or at least {', '.join(unknown)}")
        return _complete(float("nan"), given, count_from_shape=True)
    if not parameters > 0:
        raise ValueError(f"parameters must be > 0, got {parameters}")
    return _complete(float(parameters), given, count_from_shape=False)


def _complete(parameters: float, given: dict[str, int | None], *, count_from_shape: bool) -> ModelFacts:
    n = parameters
    if count_from_shape:
        # Only the shape is known: use the reference nearest in width for the proportions.
        h0 = int(given["hidden_size"] or 0)
        ref = min(_REFERENCES, key=lambda s: abs(math.log(h0 / s.hidden_size)))
        snap = False
    else:
        ref, snap = nearest_reference(n)
    hidden = given["hidden_size"] or (ref.hidden_size if snap else _round_to(math.cbrt(128 * n / 13), 64))
    same_width = snap and hidden == ref.hidden_size
    heads = given["num_attention_heads"] or (
        ref.num_attention_heads if same_width else _default_heads(hidden)
    )
    head_dim = max(1, hidden // heads)
    if given["num_key_value_heads"]:
        kv_heads = int(given["num_key_value_heads"])
    elif same_width and heads == ref.num_attention_heads:
        kv_heads = ref.num_key_value_heads
    else:
        kv_heads = max(1, heads // 4)
    if given["intermediate_size"]:
        intermediate = int(given["intermediate_size"])
    elif same_width:
        intermediate = ref.intermediate_size
    else:
        ratio = ref.intermediate_size / ref.hidden_size if (snap or count_from_shape) else 3.5
        intermediate = _round_to(ratio * hidden, 64)
    if given["vocab_size"]:
        vocab = int(given["vocab_size"])
    elif snap or count_from_shape:
        vocab = ref.vocab_size
    else:
        vocab = 32000 if n < _SMALL_MODEL else 128256
    tie = ref.tie_embeddings if (snap or count_from_shape) else n < _TIED_BELOW

    def count(layers: int) -> int:
        return count_parameters(
            layers=layers,
            hidden_size=hidden,
            vocab_size=vocab,
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            intermediate_size=intermediate,
            head_dim=head_dim,
            tie_embeddings=tie,
        )

    if given["layers"]:
        layers = int(given["layers"])
    else:
        layers = max(1, round((n - count(0)) / (count(1) - count(0))))
    if count_from_shape:
        n = float(count(layers))
    inferred = tuple(k for k, v in given.items() if v is None)
    if count_from_shape:
        inferred = (*inferred, "parameters")
    if not inferred:
        basis = "given"
    elif snap:
        basis = f"shape of {ref.name}" + ("" if same_width else ", proportions scaled to the given width")
    elif count_from_shape:
        basis = f"proportions of {ref.name}, parameters counted from the shape"
    else:
        basis = "LLaMA-3-like proportions (h = cbrt(128 N / 13))"
    return ModelFacts(
        parameters=n,
        layers=layers,
        hidden_size=hidden,
        vocab_size=vocab,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=intermediate,
        head_dim=head_dim,
        tie_embeddings=tie,
        basis=basis,
        inferred=inferred,
    )
