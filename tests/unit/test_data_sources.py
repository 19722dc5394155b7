"""Dataset URIs: local paths, data_root, file://, configmap://, builtin://, s3:// and hf://, and the
errors (naming the URI and the line) that stages turn into condition messages."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from stratos.data.sources import DataSourceError, iter_records, open_source, read_text

ROWS = [{"prompt": "1+1?", "answer": "2"}, {"prompt": "2+2?", "answer": "4"}]


def _jsonl(path: Path, rows: list[dict[str, Any]] = ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_absolute_path_and_file_uri(tmp_path: Path) -> None:
    p = _jsonl(tmp_path / "d.jsonl")
    assert open_source(str(p)) == ROWS
    assert open_source(p.as_uri()) == ROWS
    assert open_source(f"file://localhost{p}") == ROWS


def test_absolute_path_is_read_under_data_root(tmp_path: Path) -> None:
    _jsonl(tmp_path / "pvc" / "datasets" / "d.jsonl")
    root = str(tmp_path / "pvc")
    assert open_source("/datasets/d.jsonl", data_root=root) == ROWS
    assert open_source("datasets/d.jsonl", data_root=root) == ROWS
    # Already spelled under the mount point: not re-rooted twice.
    assert open_source(f"{root}/datasets/d.jsonl", data_root=root) == ROWS
    # file:// is never re-rooted.
    with pytest.raises(DataSourceError, match="file not found"):
        open_source("file:///datasets/d.jsonl", data_root=root)


def test_json_array_blank_lines_and_bom(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(ROWS, indent=2), encoding="utf-8")
    assert open_source(str(tmp_path / "a.json")) == ROWS
    (tmp_path / "b.jsonl").write_text("\ufeff" + json.dumps(ROWS[0]) + "\n\n  \n" + json.dumps(ROWS[1]))
    assert list(iter_records(str(tmp_path / "b.jsonl"))) == [(1, ROWS[0]), (4, ROWS[1])]


def test_configmap_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _jsonl(tmp_path / "my-data" / "train.jsonl")
    monkeypatch.setenv("STRATOS_CONFIGMAP_ROOT", str(tmp_path))
    assert open_source("configmap://my-data/train.jsonl") == ROWS
    with pytest.raises(DataSourceError, match=r"configmap://my-data/other.jsonl: file not found"):
        open_source("configmap://my-data/other.jsonl")
    with pytest.raises(DataSourceError, match="expected configmap://NAME/KEY"):
        open_source("configmap://just-a-name")


def test_configmap_default_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATOS_CONFIGMAP_ROOT", raising=False)
    with pytest.raises(DataSourceError, match=r"/etc/stratos/configmaps/cm/key"):
        read_text("configmap://cm/key")


def test_builtin_uri() -> None:
    rows = open_source("builtin://gsm8k-sample.jsonl")
    assert len(rows) == 20 and all("####" in r["answer"] for r in rows)
    with pytest.raises(DataSourceError, match="expected builtin://FILE"):
        open_source("builtin://../registry.py")


def test_malformed_rows_name_uri_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a", "answer": "b"}\n\n{"prompt": "c", "answer": \n')
    with pytest.raises(DataSourceError) as err:
        open_source(str(p))
    assert err.value.line == 3 and err.value.uri == str(p)
    assert str(err.value).startswith(f"dataset {p}, line 3: invalid JSON")
    p.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataSourceError, match=r"line 2: expected a JSON object, got list"):
        open_source(str(p))
    p.write_text('[{"a": 1},\n 2]')
    with pytest.raises(DataSourceError, match=r"element 1 is a int"):
        open_source(str(p))
    p.write_text('[{"a": 1},\n {"b": ]')
    with pytest.raises(DataSourceError, match=r"line 2: invalid JSON"):
        open_source(str(p))


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="file not found"):
        open_source(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataSourceError, match="is a directory"):
        open_source(str(tmp_path))
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataSourceError, match="not UTF-8"):
        open_source(str(tmp_path / "bin.jsonl"))
    with pytest.raises(DataSourceError, match="unsupported URI scheme 'ftp'"):
        open_source("ftp://host/file.jsonl")
    with pytest.raises(DataSourceError, match="empty dataset URI"):
        read_text("  ")
    with pytest.raises(DataSourceError, match="must name a local path"):
        open_source("file://otherhost/x.jsonl")


def test_s3_without_s3fs_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs -> ImportError, even where installed
    with pytest.raises(DataSourceError, match=r"s3://bucket/d.jsonl: reading this URI needs s3fs"):
        open_source("s3://bucket/d.jsonl")


def test_s3_reads_through_fsspec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    opened: list[str] = []
    seen_options: list[dict[str, Any]] = []
    fake = types.ModuleType("fsspec")

    def fake_open(target: str, mode: str = "r", encoding: str | None = None, **options: Any) -> io.StringIO:
        opened.append(target)
        seen_options.append(options)
        return io.StringIO("".join(json.dumps(r) + "\n" for r in ROWS))

    fake.open = fake_open  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fsspec", fake)
    assert open_source("s3://bucket/data/train.jsonl") == ROWS
    assert opened == ["s3://bucket/data/train.jsonl"] and seen_options == [{}]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.storage:9000")
    open_source("s3://bucket/data/train.jsonl")
    assert seen_options[-1] == {"client_kwargs": {"endpoint_url": "http://minio.storage:9000"}}


def test_hf_dataset_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    fake = types.ModuleType("datasets")

    def load_dataset(repo: str, config: str | None, split: str) -> list[dict[str, Any]]:
        calls.append((repo, config, split))
        if repo == "org/missing":
            raise FileNotFoundError("Dataset 'org/missing' doesn't exist on the Hub")
        return ROWS

    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert open_source("hf://datasets/openai/gsm8k/main@test") == ROWS
    assert open_source("hf://datasets/org/name") == ROWS
    assert calls == [("openai/gsm8k", "main", "test"), ("org/name", None, "train")]
    with pytest.raises(DataSourceError, match=r"hf://datasets/org/missing: cannot load org/missing"):
        open_source("hf://datasets/org/missing")
    with pytest.raises(DataSourceError, match=r"expected hf://datasets/ORG/NAME"):
        open_source("hf://models/org/name")


def test_hf_without_datasets_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataSourceError, match="need the 'datasets' package"):
        open_source("hf://datasets/org/name")
