"""Tiny random-initialised causal LMs with a tokenizer trained on the spot, or fitted to the Mahjong task.

Tests (and the local example) cannot download a model, and a real one would be too slow on a shared
CPU anyway. So this module builds one from nothing: a byte-level BPE tokenizer trained with the
``tokenizers`` library on task text (the Mahjong prompts with their Unicode tiles, GSM8K-style
problems, digits, the prompt words every task uses), wrapped as a transformers
``PreTrainedTokenizerFast`` with pad/eos tokens and a ChatML chat template (so trl's conversational
trainers work), and a Llama- or Qwen2-architecture model with a few tens of thousands of parameters.
Both are written with ``save_pretrained`` so the stage programs load them through exactly the code that
loads real checkpoints (``stratos.training.models``).

Byte-level BPE round-trips any text, so answers the extractor must find ("The answer is 🀇 🀈")
survive decode; tile glyphs frequent in the corpus become single tokens.

``tokenizer="mahjong"`` fits the tokenizer to the Mahjong task instead (``mahjong_tokenizer``): one token
per tile (34), one token for each fixed phrase the prompts and the programmatic teacher's explanations
repeat verbatim (the system prompt with its legend, the question line, the answer-format request, "The
answer is", the explanation's step headings), and a small byte-level BPE for everything else, so any
text still round-trips. A question is then ~30 tokens and an answer a handful, which is what lets a
model of under a million parameters learn the task on a CPU in minutes; with a generic tokenizer the
same model spends its capacity and its minutes on the prompt's boilerplate and stays at 0%.

Everything is deterministic for a given ``TinySpec``: the tokenizer depends only on the corpus and the
vocabulary size, the weights only on the seed (drawn inside ``torch.random.fork_rng`` so the caller's
RNG state is untouched). A directory already holding the same spec is reused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", EOS_TOKEN, PAD_TOKEN)
MARKER = "stratos-tiny.json"

#: ChatML, as Qwen uses it: the prompt rendered with add_generation_prompt is a token prefix of the
#: prompt plus the assistant's reply, which trl's completion-only loss relies on.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: The chat template's role names, so each is one token of the task-fitted tokenizer.
ROLE_WORDS = "\n".join(["system", "user", "assistant"] * 8)

#: Words of the toy tasks the tests train on, so they tokenise compactly too.
TOY_WORDS = (
    "red green blue yellow black white apple banana cherry grape lemon mango orange peach pear plum "
    "cat dog fox owl bee ant cow pig hen yak one two three four five six seven eight nine ten "
    "characters dots bamboo winds dragons honours east south west north colour color fruit animal "
    "What is the of Name say Answer answer Question question Repeat word next after before"
)


@dataclass(frozen=True)
class TinySpec:
    """The shape of a tiny model. Defaults: ~60k parameters, fast enough for CPU training tests."""

    arch: Literal["llama", "qwen2"] = "llama"
    vocab_size: int = 1024
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    max_positions: int = 4096
    #: Weight init std. Larger than the usual 0.02 so that the (tied, not LoRA-trained) embeddings can
    #: produce confident logits: with 0.02 a 64-wide model's logits span ~±1.3 and no adapter can push
    #: the loss far below log(vocab).
    init_std: float = 0.1
    seed: int = 0
    #: Extra corpus lines for the tokenizer (e.g. a toy task's prompts).
    extra_texts: tuple[str, ...] = field(default_factory=tuple)
    #: "bpe": byte-level BPE of ``vocab_size`` trained on every built-in task's text; "mahjong": fitted to
    #: the Mahjong task (a token per tile and per fixed phrase, plus a BPE of ``vocab_size`` for the rest).
    tokenizer: Literal["bpe", "mahjong"] = "bpe"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["extra_texts"] = list(self.extra_texts)
        return data


def default_corpus(extra: Iterable[str] = ()) -> list[str]:
    """Text the tokenizer is trained on: what the built-in tasks and prompts actually say."""
    from stratos.tasks.base import Task
    from stratos.tasks.mahjong import MahjongTask
    from stratos.tasks.mahjong_tiles import GLYPHS

    texts: list[str] = [TOY_WORDS, " ".join(str(i) for i in range(0, 1001)), " ".join(GLYPHS)]
    mahjong = MahjongTask(seed=0, train_size=48, test_size=4)
    for sample in mahjong.load("train"):
        reasoning = mahjong.explain(sample)
        texts.extend(m["content"] for m in mahjong.messages(sample, reasoning=reasoning))
        texts.extend(m["content"] for m in mahjong.reverse_messages(sample))
        texts.append(mahjong.completion(sample, reasoning))
    texts.append(Task.answer_format)
    gsm8k = Path(__file__).resolve().parent.parent / "tasks" / "data" / "gsm8k-sample.jsonl"
    if gsm8k.exists():
        for line in gsm8k.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts.extend(str(v) for v in row.values())
    texts.extend(extra)
    return texts


def mahjong_phrases() -> list[str]:
    """The strings the Mahjong prompts and the programmatic teacher's explanations repeat verbatim,
    longest first (each becomes one token of the task-fitted tokenizer)."""
    from stratos.tasks.mahjong import ANSWER_FORMAT, SYSTEM_PROMPT, MahjongTask
    from stratos.tasks.mahjong_tiles import SUIT_NAMES

    task = MahjongTask(seed=0, train_size=1, test_size=1)
    hint = task.messages(task.load("train")[0], reasoning="x")[1]["content"]  # the probe's hint wrapper
    hint_head = hint[hint.index("\n\nHere are") : hint.index("<reasoning>\n") + len("<reasoning>\n")]
    phrases = [
        SYSTEM_PROMPT,
        "Which tiles would complete this hand? List every winning tile.",
        "\n\nThink step by step. " + ANSWER_FORMAT,
        hint_head,
        "\n</reasoning>",
        "Hand: ",
        "The answer is ",
        # stratos.tasks.mahjong.explain
        "Step 1: Sort the 13 tiles and group them by suit.",
        "Step 2: A winning hand is 14 tiles: one pair plus four melds (a sequence of three consecutive "
        "numbers in one suit, or a triplet of identical tiles). Only a tile equal to or within two "
        "numbers of a held tile, or an honour already held, can help, so try each of those as the "
        "14th tile.",
        "Step 3: Candidates that complete the hand:",
        "Step 4: Check the remaining candidates.",
        "- Adding any of ",
        " leaves tiles that cannot all be grouped into a pair and four melds, so none of them wins.",
        " is already held four times, so no copy is left to win on.",
        "- There are no other candidates.",
        "- Adding ",
        ". This is complete, so ",
        " wins.",
        " (pair)",
        " (sequence)",
        " (triplet)",
        " + ",
        " (numbers ",
        "- honours: ",
        *(f"- {suit}: " for suit in SUIT_NAMES),
        *(f" of {suit}" for suit in SUIT_NAMES),
    ]
    return sorted(dict.fromkeys(phrases), key=len, reverse=True)


def mahjong_corpus() -> list[str]:
    """Prompts, reverse-reasoning requests and explained answers of a few hundred generated hands."""
    from stratos.tasks.mahjong import MahjongTask

    texts: list[str] = []
    mahjong = MahjongTask(seed=0, train_size=300, test_size=4)
    for sample in mahjong.load("train"):
        reasoning = mahjong.explain(sample)
        texts.extend(m["content"] for m in mahjong.messages(sample))
        texts.extend(m["content"] for m in mahjong.reverse_messages(sample))
        texts.append(mahjong.completion(sample, reasoning))
    return texts


def mahjong_tokenizer(vocab_size: int = 336, max_length: int = 4096) -> PreTrainedTokenizerFast:
    """The task-fitted tokenizer of ``vocab_size`` entries in all: a token per tile and per fixed phrase
    (``mahjong_phrases``), the ChatML specials, and a byte-level BPE trained on what is left of the
    Mahjong corpus (the 256 bytes plus as many merges as the remaining size allows)."""
    from tokenizers import AddedToken

    from stratos.tasks.mahjong_tiles import GLYPHS

    phrases = mahjong_phrases()
    added = [*GLYPHS, *phrases]
    bpe_size = vocab_size - len(added)
    if bpe_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size {vocab_size} leaves no room for the 256 bytes: at least "
            f"{256 + len(SPECIAL_TOKENS) + len(added)}"
        )
    rest = [ROLE_WORDS]
    for text in mahjong_corpus():
        for phrase in phrases:
            text = text.replace(phrase, "\n")
        for glyph in GLYPHS:
            text = text.replace(glyph, " ")
        rest.append(text)
    tokenizer = train_tokenizer(rest, bpe_size, max_length)
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in added])
    return tokenizer


def train_tokenizer(
    texts: Sequence[str], vocab_size: int = 1024, max_length: int = 4096
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts``, with ChatML special tokens and chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_length,
        padding_side="right",
    )


def build_tiny_model(path: str | os.PathLike[str], spec: TinySpec | None = None, **overrides: Any) -> Path:
    """Write a tiny model + tokenizer to ``path`` (created) and return it; reuse it if already built.

    ``overrides`` replace fields of ``spec`` (e.g. ``build_tiny_model(p, seed=1, vocab_size=800)``).
    """
    spec = dataclasses.replace(spec or TinySpec(), **overrides)
    target = Path(path)
    marker = target / MARKER
    if marker.exists() and json.loads(marker.read_text()) == spec.to_json():
        return target
    if spec.tokenizer == "mahjong":
        tokenizer = mahjong_tokenizer(spec.vocab_size, spec.max_positions)
    else:
        tokenizer = train_tokenizer(default_corpus(spec.extra_texts), spec.vocab_size, spec.max_positions)
    model = _random_model(spec, tokenizer)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / MARKER).write_text(json.dumps(spec.to_json(), indent=1))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _random_model(spec: TinySpec, tokenizer: PreTrainedTokenizerFast) -> Any:
    common: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=spec.init_std,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        if spec.arch == "qwen2":
            model: Any = Qwen2ForCausalLM(Qwen2Config(**common))
        else:
            model = LlamaForCausalLM(LlamaConfig(**common))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model


def main(argv: Sequence[str] | None = None) -> int:
    """Build a tiny model and tokenizer in OUT and print the path (for the local example)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stratos.training.tiny", description=main.__doc__)
    parser.add_argument("out", help="directory to write the model and tokenizer to")
    defaults = TinySpec()
    for name in ("seed", "vocab_size", "hidden_size", "layers", "heads", "kv_heads", "intermediate_size"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    parser.add_argument("--arch", choices=("llama", "qwen2"), default=defaults.arch)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    print(build_tiny_model(out, TinySpec(**args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
