"""The local runner's serving: real ``transformers serve`` on a tiny random model, offline, on CPU.

The model is built on the spot (a tokenizer trained on a few words, a random 2-layer Llama with
hidden size 32), so nothing is downloaded; ``HF_HUB_OFFLINE=1`` makes sure nothing tries.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from stratos.serving.local import LocalServerError, serve_available, start_local_server
from stratos.serving.probe import probe_endpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not serve_available(), reason="needs transformers[serving] (fastapi, uvicorn)"),
]

CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny(path: Path) -> Path:
    """The training package's tiny builder when present, else the same idea in a few lines."""
    try:
        from stratos.training.tiny import build_tiny_model
    except ImportError:
        return _minimal_tiny(path)
    return build_tiny_model(path, hidden_size=32, intermediate_size=64, vocab_size=512)


def _minimal_tiny(path: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(["hello world what is one two three answer user assistant"] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|pad|>", chat_template=CHATML
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("serving") / "merged")


def test_transformers_serve_answers_chat_and_probe_then_stops_cleanly(model_dir: Path) -> None:
    # One server for every check: starting one costs seconds of the shared CPU.
    server = start_local_server(model_dir, model_name="tiny-student", env={"OMP_NUM_THREADS": "1"})
    try:
        assert server.model_name == "tiny-student" and server.base_url.startswith("http://127.0.0.1:")
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", max_retries=0, timeout=60)
        response = client.chat.completions.create(
            model="tiny-student",
            messages=[{"role": "user", "content": "what is one"}],
            max_tokens=8,
            temperature=0.0,
        )
        client.close()
        assert response.choices[0].message.content  # random weights: some text, never empty
        assert response.usage is not None
        assert response.usage.prompt_tokens > 0 and 0 < response.usage.completion_tokens <= 8

        result = probe_endpoint(server.base_url, server.model_name, max_tokens=8, timeout=60)
        assert result.ok, result.error
        assert result.tokens_per_second is not None and result.tokens_per_second > 0
        assert result.latency_ms_p50 is not None and result.latency_ms_p50 > 0

        # transformers serve answers only for the model it was started with.
        refused = probe_endpoint(server.base_url, "another-model", prompts=["hi"], max_tokens=2, timeout=30)
        assert not refused.ok and refused.error is not None and "400" in refused.error
    finally:
        server.stop()
    assert server.process.returncode is not None and not server.workdir.exists()
    assert not probe_endpoint(server.base_url, server.model_name, prompts=["hi"], timeout=5).ok


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalServerError, match=r"config\.json"):
        start_local_server(tmp_path)
