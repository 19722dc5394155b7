"""Model URIs, hub failures, adapter metadata: stratos.training.models."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("transformers")

from stratos.training import models
from stratos.training.models import (
    ModelLoadError,
    load_for_inference,
    read_adapter_metadata,
    resolve_model_uri,
    write_adapter_metadata,
)
from support.tiny_models import tiny_model


def test_local_paths_and_file_uris_resolve_to_existing_directories(tmp_path):
    (tmp_path / "m").mkdir()
    assert resolve_model_uri(str(tmp_path / "m")).location == str((tmp_path / "m").resolve())
    ref = resolve_model_uri(f"file://{tmp_path}/m")
    assert ref.is_local and ref.location == str((tmp_path / "m").resolve())


def test_paths_are_looked_up_under_the_storage_mount_first(tmp_path):
    root = tmp_path / "storage"
    (root / "models" / "x").mkdir(parents=True)
    expected = str((root / "models" / "x").resolve())
    assert resolve_model_uri("/models/x", data_root=str(root)).location == expected
    # A path already spelled under the mount, or one that only exists as written, still works.
    assert resolve_model_uri(str(root / "models" / "x"), data_root=str(root)).is_local
    (tmp_path / "elsewhere").mkdir()
    assert resolve_model_uri(str(tmp_path / "elsewhere"), data_root=str(root)).is_local


def test_hub_uris_parse_with_optional_revision():
    ref = resolve_model_uri("hf://Qwen/Qwen2.5-0.5B-Instruct@main")
    assert (ref.source, ref.location, ref.revision) == ("hub", "Qwen/Qwen2.5-0.5B-Instruct", "main")
    assert resolve_model_uri("hf://meta-llama/Llama-3.2-1B-Instruct").revision is None


@pytest.mark.parametrize(
    "uri, message",
    [
        ("hf://just-a-name", "expected hf://ORG/NAME"),
        ("s3://bucket/model", "unsupported scheme 's3'"),
        ("/nowhere/at/all", "no model directory at /nowhere/at/all"),
        ("Qwen/Qwen2.5-0.5B", "Hub models are written hf://ORG/NAME"),
        ("", "empty model URI"),
    ],
)
def test_bad_uris_are_refused_with_a_reason(uri, message):
    with pytest.raises(ModelLoadError) as err:
        resolve_model_uri(uri)
    assert message in str(err.value)
    assert err.value.kind == "ModelUnavailable"


def test_unreachable_hub_gives_an_actionable_error(monkeypatch, tmp_path):
    # HF_HUB_OFFLINE: the model is not in the (empty) cache and the Hub may not be asked.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    ref = resolve_model_uri("hf://stratos-test/does-not-exist")
    with pytest.raises(ModelLoadError) as err:
        models.load_tokenizer(ref)
    text = str(err.value)
    assert "cannot load the tokenizer of hf://stratos-test/does-not-exist from the Hugging Face Hub" in text
    assert "copy the model onto the storage volume" in text


def test_hub_downloads_are_cached_on_the_storage_volume(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("STRATOS_STORAGE_DIR", str(tmp_path))
    kwargs = models._hub_kwargs(resolve_model_uri("hf://a/b@v1"))
    assert kwargs["cache_dir"] == str(tmp_path / "cache" / "huggingface") and kwargs["revision"] == "v1"
    assert models._hub_kwargs(resolve_model_uri(str(tmp_path))) == {}


def test_adapter_metadata_round_trip(tmp_path):
    write_adapter_metadata(tmp_path / "adapter", base_model_uri="hf://a/b", algorithm="sft-lora", steps=3)
    assert read_adapter_metadata(tmp_path / "adapter") == {
        "baseModelUri": "hf://a/b",
        "algorithm": "sft-lora",
        "steps": 3,
    }
    assert read_adapter_metadata(tmp_path / "missing") == {}


def test_a_directory_that_is_not_a_model_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer at"):
        load_for_inference(str(tmp_path / "empty"))


def test_a_tokenizer_without_chat_template_is_refused(tmp_path):
    copy = tmp_path / "plain"
    shutil.copytree(tiny_model(), copy)
    (copy / "chat_template.jinja").unlink()
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="no chat template"):
        load_for_inference(str(copy))


def test_adapter_without_adapter_files_is_refused(tmp_path):
    (tmp_path / "adapter").mkdir()
    write_adapter_metadata(tmp_path / "adapter", base_model_uri=str(tiny_model()), algorithm="sft-lora")
    with pytest.raises(ModelLoadError, match="no LoRA adapter at"):
        load_for_inference(None, adapter=str(tmp_path / "adapter"))
    with pytest.raises(ModelLoadError, match="does not name its base model"):
        load_for_inference(None, adapter=str(tmp_path))
