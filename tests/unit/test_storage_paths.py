"""Paths on the storage volume stay on it (issue 15, defect 6): the operator refuses a dataset path with
``..`` segments naming the field, and the stage programs resolve every storage path (``..`` and
symbolic links) and refuse one that leaves the volume."""

from __future__ import annotations

from pathlib import Path

import pytest

from stratos.data.sources import DataSourceError, iter_records, local_path
from stratos.pipeline.machine import reconcile
from stratos.training.models import ModelLoadError, resolve_model_uri
from stratos.training.tasking import local_file
from support.jobs import NODES, NOW, ScriptedExecutor, conditions, job


@pytest.fixture
def volume(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "storage", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "x.jsonl").write_text('{"prompt": "secret", "answer": "1"}\n')
    (root / "ok.jsonl").write_text('{"prompt": "p", "answer": "1"}\n')
    (root / "link.jsonl").symlink_to(outside / "x.jsonl")
    (root / "linkdir").symlink_to(outside)
    return root, outside


@pytest.mark.parametrize(
    "uri",
    [
        "/../outside/x.jsonl",
        "/../../../../../../{outside}/x.jsonl",
        "../outside/x.jsonl",
        "/link.jsonl",
        "linkdir/x.jsonl",
        "{root}/../outside/x.jsonl",
    ],
)
def test_a_dataset_path_that_leaves_the_volume_is_refused(volume: tuple[Path, Path], uri: str) -> None:
    root, outside = volume
    uri = uri.format(root=root, outside=str(outside).lstrip("/"))
    with pytest.raises(DataSourceError, match="leaves the storage volume"):
        local_path(uri, data_root=str(root))
    with pytest.raises(DataSourceError, match="leaves the storage volume"):
        list(iter_records(uri, data_root=str(root)))


def test_paths_on_the_volume_are_read(volume: tuple[Path, Path]) -> None:
    root, _ = volume
    for uri in ("/ok.jsonl", "ok.jsonl", f"{root}/ok.jsonl", "/sub/../ok.jsonl"):
        assert local_path(uri, data_root=str(root)) == (root / "ok.jsonl").resolve()
    assert [r["prompt"] for _, r in iter_records("/ok.jsonl", data_root=str(root))] == ["p"]


def test_configmap_keys_cannot_climb() -> None:
    with pytest.raises(DataSourceError, match="configmap://NAME/KEY"):
        local_path("configmap://cm/..")


def test_stage_paths_and_model_lookups_stay_on_the_volume(volume: tuple[Path, Path]) -> None:
    root, outside = volume
    with pytest.raises(ValueError, match="leaves the storage volume"):
        local_file("../outside/x.jsonl", data_root=str(root))
    with pytest.raises(ValueError, match="leaves the storage volume"):
        local_file(f"{root}/linkdir/x.jsonl", data_root=str(root))
    assert local_file("ok.jsonl", data_root=str(root)) == (root / "ok.jsonl").resolve()
    # A model directory is looked up on the volume first: never through a path that leaves it.
    (outside / "model").mkdir()
    with pytest.raises(ModelLoadError):
        resolve_model_uri("/../outside/model", data_root=str(root))


def test_the_operator_refuses_the_path_with_a_condition_naming_the_field() -> None:
    body = job(task={"builtin": "jsonl", "dataset": {"train": "/ok.jsonl", "test": "/../../var/tmp/x.jsonl"}})
    executor = ScriptedExecutor({})
    out = reconcile(body, nodes=NODES, executor=executor, now=NOW)
    assert executor.started == [] and out.status["phase"] == "Failed"
    failed = conditions(out.status)["Failed"]
    assert failed["reason"] == "InvalidSpec"
    assert "spec.task.dataset.test" in failed["message"] and "'..'" in failed["message"], failed
