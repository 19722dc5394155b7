"""ModelFacts: reading config.json (llama / qwen2 / gpt2 variants) and filling a spec's unknowns.

Every expected parameter count is worked out by hand in the comments, with
per layer = h*q + 2*h*kv + q*h + (3 or 2)*h*I + 2*h and total = L*per layer + V*h*(1 or 2) + P*h + h.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from stratos.decide.models import ModelFacts, count_parameters, infer_facts

LLAMA_TINY = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "tie_word_embeddings": False,
}
QWEN2_TINY = {
    "model_type": "qwen2",
    "num_hidden_layers": 3,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "vocab_size": 500,
    "tie_word_embeddings": True,
}
GPT2_TINY = {
    "model_type": "gpt2",
    "n_layer": 2,
    "n_embd": 64,
    "n_head": 4,
    "vocab_size": 1000,
    "n_positions": 128,
    "n_inner": None,
}
# The published meta-llama/Llama-3.2-3B config.json (shape keys).
LLAMA_32_3B = {
    "model_type": "llama",
    "num_hidden_layers": 28,
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_attention_heads": 24,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
}


def spec(**kw: object) -> SimpleNamespace:
    fields = dict.fromkeys(
        (
            "parameters",
            "layers",
            "hidden_size",
            "vocab_size",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
        )
    )
    fields.update(kw)
    return SimpleNamespace(**fields)


def test_llama_style_config() -> None:
    f = ModelFacts.from_config_json(LLAMA_TINY)
    # head_dim = 64/4 = 16; q = 64, kv = 2*16 = 32
    assert (f.head_dim, f.q_dim, f.kv_dim) == (16, 64, 32)
    # per layer: 64*64 + 2*64*32 + 64*64 = 12288 attention, 3*64*176 = 33792 MLP, 128 norms -> 46208
    # total: 2*46208 = 92416 + untied embeddings 2*1000*64 = 128000 + final norm 64 = 220480
    assert f.parameters == 220_480
    assert (f.layers, f.vocab_size, f.num_key_value_heads, f.tie_embeddings, f.gated_mlp) == (
        2,
        1000,
        2,
        False,
        True,
    )


def test_qwen2_style_config() -> None:
    f = ModelFacts.from_config_json(QWEN2_TINY)
    # head_dim = 128/8 = 16, kv = 2*16 = 32
    # per layer: 128*128 + 2*128*32 + 128*128 = 40960; 3*128*256 = 98304; 256 -> 139520
    # total: 3*139520 = 418560 + tied 500*128 = 64000 + 128 = 482688
    assert f.parameters == 482_688
    assert f.tie_embeddings is True and f.kv_dim == 32


def test_gpt2_style_config() -> None:
    f = ModelFacts.from_config_json(GPT2_TINY)
    # n_inner None -> 4*64 = 256; non-gated MLP; kv heads = heads (no GQA); tied by default
    # per layer: 4*64*64 = 16384 attention + 2*64*256 = 32768 MLP + 128 norms = 49280
    # total: 2*49280 = 98560 + 1000*64 = 64000 + 128 positions * 64 = 8192 + 64 = 170816
    assert f.intermediate_size == 256 and f.num_key_value_heads == 4
    assert not f.gated_mlp and f.tie_embeddings
    assert f.parameters == 170_816
    targets = [t[0] for t in f.lora_targets()]
    assert targets == ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def test_untied_default_for_llama_when_key_missing() -> None:
    config = {k: v for k, v in LLAMA_TINY.items() if k != "tie_word_embeddings"}
    assert ModelFacts.from_config_json(config).tie_embeddings is False


def test_published_llama_3b_count() -> None:
    # 28 * (25165824 + 75497472 + 6144) + 128256*3072 + 3072 = 3,212,749,824 (the published 3.21B)
    assert ModelFacts.from_config_json(LLAMA_32_3B).parameters == 3_212_749_824


def test_config_from_file_dir_and_text_config(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(QWEN2_TINY))
    assert ModelFacts.from_config_json(tmp_path).parameters == 482_688
    assert ModelFacts.from_config_json(tmp_path / "config.json").parameters == 482_688
    nested = {"model_type": "llava", "text_config": LLAMA_TINY}
    assert ModelFacts.from_config_json(nested).parameters == 220_480
    assert ModelFacts.from_config_json(QWEN2_TINY, parameters=5e5).parameters == 5e5


def test_config_missing_keys() -> None:
    with pytest.raises(ValueError, match="hidden size"):
        ModelFacts.from_config_json({"num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 10})


@pytest.mark.parametrize(
    ("parameters", "reference", "layers", "hidden", "heads", "kv", "inter", "vocab"),
    [
        (1.24e9, "llama-3.2-1b", 16, 2048, 32, 8, 8192, 128256),
        (1.54e9, "qwen2.5-1.5b", 28, 1536, 12, 2, 8960, 151936),
        (3.2e9, "llama-3.2-3b", 28, 3072, 24, 8, 8192, 128256),
        (8.03e9, "llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256),
    ],
)
def test_spec_with_parameters_only_snaps_to_published_shape(
    parameters: float, reference: str, layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int
) -> None:
    f = ModelFacts.from_spec(spec(parameters=parameters))
    assert (
        f.layers,
        f.hidden_size,
        f.num_attention_heads,
        f.num_key_value_heads,
        f.intermediate_size,
        f.vocab_size,
    ) == (layers, hidden, heads, kv, inter, vocab)
    assert f.parameters == parameters  # weights memory always uses the stated count
    assert f.basis == f"shape of {reference}"
    assert "layers" in f.inferred and "parameters" not in f.inferred


def test_spec_depth_solved_from_parameter_count() -> None:
    # 3.2e9 snaps to llama-3.2-3b: embeddings 128256*3072 + 3072 = 394,005,504, one layer 100,669,440
    # -> L = round((3.2e9 - 394,005,504) / 100,669,440) = round(27.87) = 28
    assert ModelFacts.from_spec(spec(parameters=3.2e9)).layers == 28


def test_spec_given_fields_win_and_shape_follows() -> None:
    f = ModelFacts.from_spec(spec(parameters=3.2e9, hidden_size=2560, layers=30))
    assert (f.hidden_size, f.layers) == (2560, 30)
    # width differs from llama-3.2-3b's 3072: heads 2560/128 = 20, kv 20/4 = 5, I = 8192/3072*2560 -> 6848
    assert (f.num_attention_heads, f.num_key_value_heads, f.intermediate_size) == (20, 5, 6848)
    assert "scaled" in f.basis
    assert set(f.inferred) == {
        "vocab_size",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
    }


def test_spec_far_from_references_uses_aspect_ratio_rule() -> None:
    f = ModelFacts.from_spec(spec(parameters=200e9))
    # h = cbrt(128 * 200e9 / 13) = 12,536 -> 12,544 (multiple of 64); heads 12544/128 = 98; kv 98//4 = 24
    assert (f.hidden_size, f.num_attention_heads, f.num_key_value_heads) == (12544, 98, 24)
    assert f.intermediate_size == 43904  # 3.5 * 12544
    assert f.basis.startswith("LLaMA-3-like")
    tiny = ModelFacts.from_spec(spec(parameters=1e6))
    assert tiny.vocab_size == 32000 and tiny.layers >= 1


def test_spec_without_parameters_counts_the_shape() -> None:
    f = infer_facts(
        parameters=None,
        layers=2,
        hidden_size=64,
        vocab_size=1000,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=176,
    )
    assert f.parameters == 220_480 - 1000 * 64  # the llama tiny shape, but tied (nearest reference is tied)
    assert f.inferred == ("parameters",)
    with pytest.raises(ValueError, match="parameters"):
        infer_facts(parameters=None, layers=2)


def test_invalid_facts() -> None:
    with pytest.raises(ValueError):
        ModelFacts.from_spec(spec(parameters=0))
    with pytest.raises(ValueError, match="num_key_value_heads"):
        ModelFacts.from_spec(spec(parameters=3.2e9, num_attention_heads=8, num_key_value_heads=16))


def test_lora_parameters_by_hand() -> None:
    f = ModelFacts.from_config_json(LLAMA_TINY)
    # r=8: q 8*(64+64)=1024, k 8*(64+32)=768, v 768, o 1024, gate/up 8*(64+176)=1920 each, down 1920
    # per layer 1024+768+768+1024+3*1920 = 9344; 2 layers -> 18688
    assert f.lora_parameters(8) == 18_688
    with pytest.raises(ValueError):
        f.lora_parameters(0)


def test_count_parameters_matches_published_8b() -> None:
    n = count_parameters(
        layers=32,
        hidden_size=4096,
        vocab_size=128256,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        tie_embeddings=False,
    )
    assert n == 8_030_261_248  # Llama-3.1-8B
