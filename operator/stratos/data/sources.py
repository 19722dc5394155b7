"""Reading datasets named by URI: rows of JSON objects from JSONL or JSON-array files.

Supported URIs (the forms `spec.task.dataset.train/test` accepts):

- `/abs/path.jsonl`: a file; with `data_root` (the storage PVC's mount point) it is read under it;
- `relative/path.jsonl`: relative to `data_root` when given, else to the working directory;
- `file:///abs/path.jsonl`: a local file, never re-rooted;
- `s3://bucket/key.jsonl`: through fsspec + s3fs (optional; credentials from the usual AWS_*
  environment variables, an S3-compatible endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL);
- `hf://datasets/ORG/NAME[/CONFIG][@SPLIT]`: a Hugging Face dataset through `datasets.load_dataset`
  (optional); `hf://datasets/ORG/NAME/path/file.jsonl` reads that file through huggingface_hub;
- `configmap://NAME/KEY`: the key of a ConfigMap mounted at `$STRATOS_CONFIGMAP_ROOT/NAME/KEY`
  (default root /etc/stratos/configmaps);
- `builtin://FILE`: a file shipped inside the package (stratos/tasks/data/), for offline demos.

Every failure is a `DataSourceError` whose message names the URI (and the line for a bad row), so a
stage can turn it into a readable condition message instead of a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

CONFIGMAP_ROOT_ENV = "STRATOS_CONFIGMAP_ROOT"
DEFAULT_CONFIGMAP_ROOT = "/etc/stratos/configmaps"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "tasks" / "data"

Row = dict[str, Any]


class DataSourceError(ValueError):
    """A dataset could not be read; `uri` and (for a bad row) `line` say where."""

    def __init__(self, uri: str, problem: str, *, line: int | None = None):
        self.uri = uri
        self.line = line
        self.problem = problem
        where = f"{uri}, line {line}" if line is not None else uri
        super().__init__(f"dataset {where}: {problem}")


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def _is_under(path: str, root: str) -> bool:
    """A path already spelled under the mount point (e.g. /data/x with root /data) is not re-rooted."""
    root = root.rstrip("/")
    return bool(root) and path.startswith(root + "/")


def confine(uri: str, path: Path, root: str) -> Path:
    """``path`` if it really is inside ``root`` (after ``..`` and symbolic links), else DataSourceError."""
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root:
        raise DataSourceError(uri, f"the path leaves the storage volume ({root}); refused")
    return Path(real)


def local_path(uri: str, *, data_root: str | None = None) -> Path | None:
    """The local file a URI names, or None for remote schemes (s3://, hf://).

    A plain path is on the storage volume when ``data_root`` is given: it is resolved there and may not
    leave it (``..``, a symbolic link pointing out): ``DataSourceError`` otherwise."""
    scheme = _scheme(uri)
    if scheme == "":
        if data_root:
            inside = uri if _is_under(uri, data_root) else os.path.join(data_root, uri.lstrip("/"))
            return confine(uri, Path(inside), data_root)
        return Path(uri)
    if scheme == "file":
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise DataSourceError(uri, "file:// URIs must name a local path (file:///path)")
        return Path(unquote(parsed.path))
    if scheme == "configmap":
        rest = uri.split("://", 1)[1].strip("/")
        parts = rest.split("/")
        if len(parts) != 2 or not all(parts) or parts[1] in (".", ".."):
            raise DataSourceError(uri, "expected configmap://NAME/KEY")
        root = os.environ.get(CONFIGMAP_ROOT_ENV, DEFAULT_CONFIGMAP_ROOT)
        return Path(root) / parts[0] / parts[1]
    if scheme == "builtin":
        rest = uri.split("://", 1)[1].strip("/")
        if not rest or ".." in rest.split("/"):
            raise DataSourceError(uri, "expected builtin://FILE naming a file shipped with stratos")
        return BUILTIN_DIR / rest
    if scheme in ("s3", "hf"):
        return None
    raise DataSourceError(
        uri,
        f"unsupported URI scheme {scheme!r}; use a path, file://, s3://, hf://, configmap:// or builtin://",
    )


def _read_local(uri: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataSourceError(uri, f"file not found ({path})") from None
    except IsADirectoryError:
        raise DataSourceError(uri, f"is a directory, not a file ({path})") from None
    except UnicodeDecodeError as e:
        raise DataSourceError(uri, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataSourceError(uri, f"cannot read {path}: {e.strerror or e}") from None


def _read_fsspec(uri: str, target: str) -> str:
    try:
        import fsspec
    except ImportError:
        raise DataSourceError(uri, "reading this URI needs fsspec (pip install fsspec)") from None
    options: dict[str, Any] = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if target.startswith("s3://") and endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}  # MinIO and other S3-compatible stores
    try:
        with fsspec.open(target, "r", encoding="utf-8-sig", **options) as f:
            return str(f.read())
    except ImportError as e:
        hint = "s3fs" if target.startswith("s3://") else "huggingface_hub"
        raise DataSourceError(uri, f"reading this URI needs {hint} (pip install {hint}): {e}") from None
    except FileNotFoundError:
        raise DataSourceError(uri, "file not found") from None
    except UnicodeDecodeError as e:
        raise DataSourceError(uri, f"not UTF-8 text ({e.reason})") from None
    except Exception as e:  # remote stores raise their own error types
        raise DataSourceError(uri, f"cannot read: {type(e).__name__}: {e}") from None


def read_text(uri: str, *, data_root: str | None = None) -> str:
    """The whole text a URI names (not for hf:// datasets, which are tables, not files)."""
    uri = uri.strip()
    if not uri:
        raise DataSourceError("''", "empty dataset URI")
    path = local_path(uri, data_root=data_root)
    if path is not None:
        return _read_local(uri, path)
    if _scheme(uri) == "hf":
        if not _hf_is_file(uri):
            raise DataSourceError(uri, "hf:// dataset URIs name tables, not text files")
        return _read_fsspec(uri, uri)
    return _read_fsspec(uri, uri)


def _hf_is_file(uri: str) -> bool:
    return uri.split("@", 1)[0].lower().endswith((".jsonl", ".json"))


def parse_rows(uri: str, text: str) -> Iterator[tuple[int, Row]]:
    """(line number, row) for each object in a JSON array or in JSONL (blank lines skipped)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataSourceError(uri, f"invalid JSON: {e.msg}", line=e.lineno) from None
        if not isinstance(data, list):  # pragma: no cover - '[' always parses to a list
            raise DataSourceError(uri, "expected a JSON array of objects")
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise DataSourceError(uri, f"element {i} is a {type(row).__name__}, expected an object")
            yield i + 1, row
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataSourceError(uri, f"invalid JSON: {e.msg} (column {e.colno})", line=n) from None
        if not isinstance(row, dict):
            raise DataSourceError(uri, f"expected a JSON object, got {type(row).__name__}", line=n)
        yield n, row


def _parse_hf(uri: str) -> tuple[str, str | None, str]:
    """hf://datasets/ORG/NAME[/CONFIG][@SPLIT] -> (ORG/NAME, CONFIG, SPLIT)."""
    rest = uri.split("://", 1)[1]
    rest, _, split = rest.partition("@")
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 3 or parts[0] != "datasets" or len(parts) > 4:
        raise DataSourceError(uri, "expected hf://datasets/ORG/NAME[/CONFIG][@SPLIT]")
    return f"{parts[1]}/{parts[2]}", (parts[3] if len(parts) == 4 else None), split or "train"


def _hf_rows(uri: str) -> Iterator[tuple[int, Row]]:
    repo, config, split = _parse_hf(uri)
    try:
        import datasets
    except ImportError:
        raise DataSourceError(
            uri, "hf:// datasets need the 'datasets' package (pip install datasets)"
        ) from None
    try:
        table = datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # network, missing repo, missing split: all become one readable error
        raise DataSourceError(uri, f"cannot load {repo} ({config or 'default'}, {split}): {e}") from None
    for i, row in enumerate(table):
        yield i + 1, dict(row)


def iter_records(uri: str, *, data_root: str | None = None) -> Iterator[tuple[int, Row]]:
    """(line or row number, row) pairs, so callers can name the line when a field is missing."""
    uri = uri.strip()
    if _scheme(uri) == "hf" and not _hf_is_file(uri):
        yield from _hf_rows(uri)
        return
    yield from parse_rows(uri, read_text(uri, data_root=data_root))


def open_source(uri: str, *, data_root: str | None = None) -> list[Row]:
    """All rows of the dataset a URI names. Raises DataSourceError on any problem."""
    return [row for _, row in iter_records(uri, data_root=data_root)]
