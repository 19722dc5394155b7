"""The tiny test models: deterministic, loadable like real checkpoints, chat-ready for trl."""

from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("transformers")

from stratos.tasks.mahjong import MahjongTask
from stratos.training.generation import generate
from stratos.training.models import load_for_inference
from stratos.training.tiny import EOS_TOKEN, PAD_TOKEN, build_tiny_model
from support.tiny_models import one_thread, tiny_model


def _digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_spec_gives_the_same_tokenizer_and_weights(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=3)
    b = build_tiny_model(tmp_path / "b", seed=3)
    assert json.loads((a / "tokenizer.json").read_text()) == json.loads((b / "tokenizer.json").read_text())
    assert _digest(a) == _digest(b)
    c = build_tiny_model(tmp_path / "c", seed=4)
    assert _digest(c) != _digest(a)
    # Same corpus and vocabulary size: the tokenizer does not depend on the seed.
    assert (c / "tokenizer.json").read_text() == (a / "tokenizer.json").read_text()


def test_rebuilding_an_existing_directory_is_a_no_op(tmp_path):
    path = build_tiny_model(tmp_path / "m")
    before = (path / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(tmp_path / "m") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == before


def test_tokenizer_round_trips_mahjong_text_and_knows_its_special_tokens():
    _, tokenizer, _ = load_for_inference(str(tiny_model()))
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token == PAD_TOKEN
    assert 300 <= len(tokenizer) <= 2048
    text = "Hand: 🀇🀈🀉 🀙🀚\nThe answer is 🀇 🀊. 1234"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # Frequent tiles are single tokens (with their leading space), not four bytes each.
    assert len(tokenizer(" 🀇", add_special_tokens=False)["input_ids"]) == 1


def test_chat_template_prompt_is_a_token_prefix_of_prompt_plus_answer():
    _, tokenizer, _ = load_for_inference(str(tiny_model()))
    task = MahjongTask(seed=0, train_size=4, test_size=1)
    sample = task.load("train")[0]
    prompt = task.messages(sample)
    full = [*prompt, {"role": "assistant", "content": task.completion(sample)}]
    p_ids = tokenizer(
        tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )["input_ids"]
    f_ids = tokenizer(tokenizer.apply_chat_template(full, tokenize=False), add_special_tokens=False)[
        "input_ids"
    ]
    assert f_ids[: len(p_ids)] == p_ids
    assert tokenizer.eos_token_id in f_ids[len(p_ids) :]


def test_model_loads_through_the_checkpoint_path_and_generates():
    model, tokenizer, ref = load_for_inference(str(tiny_model()))
    assert ref.is_local and model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    with one_thread():
        out, stats = generate(
            model, tokenizer, [[{"role": "user", "content": "hello"}]] * 3, max_new_tokens=5, batch_size=2
        )
    assert len(out) == 3 and all(1 <= o.new_tokens <= 5 for o in out)
    assert out[0].text == out[1].text == out[2].text  # greedy, padding does not change the answer
    assert stats.sequences == 3 and stats.tokens_per_second > 0


def test_qwen2_architecture_is_available(tmp_path):
    path = build_tiny_model(tmp_path / "q", arch="qwen2")
    assert json.loads((path / "config.json").read_text())["model_type"] == "qwen2"


def test_command_line_builds_a_model(tmp_path, capsys):
    from stratos.training.tiny import main

    assert main([str(tmp_path / "cli"), "--seed", "2", "--hidden-size", "32"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["hidden_size"] == 32


def test_mahjong_fitted_tokenizer_has_a_token_per_tile_and_phrase_and_round_trips(tmp_path):
    from stratos.tasks.mahjong_tiles import GLYPHS
    from stratos.training.tiny import TinySpec, mahjong_phrases

    path = build_tiny_model(tmp_path / "fitted", TinySpec(tokenizer="mahjong", vocab_size=336))
    model, tokenizer, _ = load_for_inference(str(path))  # the same loader as any checkpoint
    assert len(tokenizer) == 336 and model.config.vocab_size == 336
    ids = {g: tokenizer(g, add_special_tokens=False)["input_ids"] for g in GLYPHS}
    assert all(len(v) == 1 for v in ids.values()) and len({v[0] for v in ids.values()}) == 34
    for phrase in mahjong_phrases():
        assert len(tokenizer(phrase, add_special_tokens=False)["input_ids"]) == 1, phrase
    task = MahjongTask(seed=3, train_size=40, test_size=1)
    for sample in task.load("train"):
        target = {"role": "assistant", "content": task.completion(sample, task.explain(sample))}
        full = [*task.messages(sample), target]
        for text in (tokenizer.apply_chat_template(full, tokenize=False), "arbitrary text, 🀄️ ünïcode"):
            assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    # The whole question (system prompt, hand, request) is a few dozen tokens; the bare answer a handful.
    sample = task.load("train")[0]
    prompt = tokenizer.apply_chat_template(task.messages(sample), add_generation_prompt=True, tokenize=False)
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 64
    assert len(tokenizer(task.completion(sample), add_special_tokens=False)["input_ids"]) <= 2 + 2 * 9
    with pytest.raises(ValueError, match="no room"):
        build_tiny_model(tmp_path / "small", TinySpec(tokenizer="mahjong", vocab_size=200))
