"""build_task from the API's TaskSpec (or a plain config mapping) and the probe subset."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from stratos.api.spec import TaskSpec
from stratos.data.sources import read_text
from stratos.tasks import build_task, sample_for_probe
from stratos.tasks.gsm8k import DEFAULT_TEST_URI, DEFAULT_TRAIN_URI, GSM8KTask
from stratos.tasks.jsonl import JsonlTask
from stratos.tasks.mahjong import MahjongTask


def test_mahjong_from_taskspec() -> None:
    task = build_task(TaskSpec(seed=4, train_size=30, test_size=5))
    assert isinstance(task, MahjongTask)
    assert (task.seed, task.train_size, task.test_size) == (4, 30, 5)
    assert len(task.load("train")) == 30 and len(task.load("test")) == 5
    default = build_task(TaskSpec())
    assert isinstance(default, MahjongTask) and (default.train_size, default.test_size) == (4260, 100)


def test_gsm8k_defaults_to_the_hub_and_reads_question_field(tmp_path: Path) -> None:
    task = build_task(TaskSpec(builtin="gsm8k"))
    assert isinstance(task, GSM8KTask)
    assert (task.train_uri, task.test_uri) == (DEFAULT_TRAIN_URI, DEFAULT_TEST_URI)
    sample = tmp_path / "gsm8k.jsonl"
    sample.write_text(read_text("builtin://gsm8k-sample.jsonl"), encoding="utf-8")
    spec = TaskSpec.model_validate({"builtin": "gsm8k", "dataset": {"train": sample.as_uri()}})
    task = build_task(spec)
    assert isinstance(task, GSM8KTask) and task.prompt_field == "question" and task.test_uri is None
    assert len(task.load("train")) == 18
    # The bundled sample (builtin://, for offline demos) works through a plain config mapping.
    task = build_task({"builtin": "gsm8k", "dataset": {"train": "builtin://gsm8k-sample.jsonl"}})
    assert len(task.load("test")) == 2


def test_jsonl_from_taskspec_with_data_root(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "t.jsonl").write_text(json.dumps({"q": "2+2?", "a": "4"}) + "\n")
    spec = TaskSpec.model_validate(
        {
            "builtin": "jsonl",
            "dataset": {
                "train": "/d/t.jsonl",
                "test": "/d/t.jsonl",
                "promptField": "q",
                "answerField": "a",
                "verifier": "numeric",
            },
        }
    )
    task = build_task(spec, data_root=str(tmp_path))
    assert isinstance(task, JsonlTask) and task.verifier == "numeric"
    assert task.load("test")[0].answer == "4"


def test_plain_mappings_and_duck_typed_objects() -> None:
    task = build_task({"builtin": "mahjong", "seed": 2, "trainSize": 7, "testSize": 3})
    assert isinstance(task, MahjongTask) and (task.seed, task.train_size, task.test_size) == (2, 7, 3)
    ds = SimpleNamespace(
        train="x.jsonl", test=None, prompt_field="p", answer_field="a", verifier="set", pattern=None
    )
    obj = SimpleNamespace(builtin="jsonl", sample_size=5, seed=0, train_size=None, test_size=None, dataset=ds)
    task = build_task(obj)
    assert isinstance(task, JsonlTask) and task.verifier == "set" and task.prompt_field == "p"


def test_bad_specs() -> None:
    with pytest.raises(ValueError, match=r"needs task\.dataset\.train"):
        build_task({"builtin": "jsonl"})
    with pytest.raises(ValueError, match=r"unknown task\.builtin 'chess'"):
        build_task({"builtin": "chess"})


def test_sample_for_probe_is_deterministic_subset() -> None:
    task = MahjongTask(seed=0, train_size=60, test_size=5)
    a = sample_for_probe(task, 10, seed=1)
    assert [s.id for s in a] == [s.id for s in sample_for_probe(task, 10, seed=1)]
    assert [s.id for s in a] != [s.id for s in sample_for_probe(task, 10, seed=2)]
    train_ids = [s.id for s in task.load("train")]
    assert len({s.id for s in a}) == 10 and all(s.id in train_ids for s in a)
    assert [train_ids.index(s.id) for s in a] == sorted(train_ids.index(s.id) for s in a)
    assert len(sample_for_probe(task, 1000, seed=1)) == 60
