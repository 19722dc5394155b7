"""Dataset shaping per trainer, and the GRPO verifier reward (stratos.training.data / trainers)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("datasets")
pytest.importorskip("trl")

from stratos.tasks.mahjong import MahjongTask
from stratos.training import data
from stratos.training.data import DatasetError
from stratos.training.trainers import estimated_steps, verifier_reward

SYSTEM = {"role": "system", "content": "rules"}
USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "2+2 is 4.\n\nThe answer is 4."}


def _row(**extra):
    return {"messages": [SYSTEM, USER, ASSISTANT], "id": "q1", "answer": "4", **extra}


def test_read_rows_names_the_bad_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_row()) + "\n\n{not json\n")
    with pytest.raises(DatasetError, match="line 3: not JSON"):
        data.read_rows(path)
    with pytest.raises(DatasetError, match="does not exist"):
        data.read_rows(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="has no rows"):
        data.read_rows(tmp_path / "empty.jsonl")


def test_sft_rows_become_prompt_completion_so_only_the_answer_is_trained():
    ds = data.sft_dataset([_row()])
    assert ds.column_names == ["prompt", "completion"]
    assert ds[0]["prompt"] == [SYSTEM, USER] and ds[0]["completion"] == [ASSISTANT]


@pytest.mark.parametrize(
    "row, message",
    [
        ({"messages": "text"}, "expected 'messages'"),
        ({"messages": [USER]}, "last message must be the assistant"),
        ({"messages": [SYSTEM, USER]}, "last message must be the assistant"),
    ],
)
def test_malformed_rows_are_refused(row, message):
    with pytest.raises(DatasetError, match=message):
        data.sft_dataset([row])


def test_grpo_rows_keep_the_answer_for_the_reward():
    ds = data.grpo_dataset([_row(), {"messages": [USER, ASSISTANT], "id": 7}], extract=lambda t: "4")
    assert ds[0] == {"prompt": [SYSTEM, USER], "answer": "4", "id": "q1"}
    assert ds[1] == {"prompt": [USER], "answer": "4", "id": "7"}  # answer taken from the assistant turn
    with pytest.raises(DatasetError, match="GRPO needs an 'answer'"):
        data.grpo_dataset([{"messages": [USER, ASSISTANT]}], extract=lambda t: None)


def test_dpo_uses_given_preference_pairs_as_they_are():
    rows = [
        {"prompt": [USER], "chosen": "The answer is 4.", "rejected": "The answer is 5."},
        {"messages": [USER, ASSISTANT], "chosen": [ASSISTANT], "rejected": "no idea"},
    ]
    ds, dropped = data.dpo_dataset(rows)
    assert dropped == 0
    assert ds[0]["chosen"] == [{"role": "assistant", "content": "The answer is 4."}]
    assert ds[1]["prompt"] == [USER] and ds[1]["rejected"] == [{"role": "assistant", "content": "no idea"}]


def test_dpo_builds_rejected_from_the_students_answers_and_drops_what_it_already_gets_right():
    rows = [_row(id="a"), _row(id="b"), _row(id="c")]
    student = {"a": "The answer is 5.", "b": "The answer is 4.", "c": ASSISTANT["content"]}
    calls = []

    def answers(prompts):
        calls.append(len(prompts))
        return [student[r["id"]] for r in rows]

    ds, dropped = data.dpo_dataset(
        rows, student_answers=answers, is_correct=lambda text, row: text.endswith("is 4.")
    )
    assert calls == [3]  # one batched call
    assert dropped == 2 and len(ds) == 1
    assert ds[0]["chosen"] == [ASSISTANT] and ds[0]["rejected"][0]["content"] == "The answer is 5."
    with pytest.raises(DatasetError, match="already answers every training prompt"):
        data.dpo_dataset(
            [_row()], student_answers=lambda p: ["The answer is 4."], is_correct=lambda text, row: True
        )
    with pytest.raises(DatasetError, match="no chosen/rejected pairs"):
        data.dpo_dataset([_row()])


def test_kd_rows_keep_the_whole_conversation():
    assert data.kd_dataset([_row()])[0] == {"messages": [SYSTEM, USER, ASSISTANT]}


def test_verifier_reward_scores_extracted_answers_with_the_task():
    task = MahjongTask(seed=0, train_size=8, test_size=2)
    sample = task.load("train")[0]
    reward = verifier_reward(task)
    completions = [
        [{"role": "assistant", "content": f"Let me see.\nThe answer is {sample.answer}."}],
        [{"role": "assistant", "content": "The answer is 🀇🀈🀉🀊🀋🀌🀍🀎🀏."}],
        "no answer at all",
        f"The answer is {sample.answer}",  # standard (non-chat) completions are plain strings
    ]
    scores = reward(
        prompts=[None] * 4, completions=completions, answer=[sample.answer] * 4, id=[sample.id] * 4
    )
    assert scores == [1.0, 0.0, 0.0, 1.0]


def test_estimated_steps():
    import torch

    from stratos.contracts.train import TrainConfig
    from stratos.training.models import Runtime
    from stratos.training.trainers import TrainRun

    config = TrainConfig(model_uri="m", dataset_path="d", output_dir="o", micro_batch_size=4, epochs=2)
    run = TrainRun(output_dir="x", runtime=Runtime("cpu", torch.float32, 0))
    assert estimated_steps(10, config, run) == 6  # ceil(10 / 4) * 2
    assert estimated_steps(10, config, run, per_row=4) == 20
    assert estimated_steps(10, config, TrainRun("x", run.runtime, world_size=2)) == 4  # ceil(10 / 8) * 2
    config.max_steps = 3
    assert estimated_steps(10, config, run) == 3


def test_longest_target_is_what_fits_after_the_prompt_plus_end_of_turn():
    rows = [
        {"messages": [USER, {"role": "assistant", "content": "a b c"}]},
        {"messages": [USER, {"role": "assistant", "content": "a b c d e"}]},  # 5 words: the longest
        {"prompt": [USER], "chosen": [{"role": "assistant", "content": "x y"}], "rejected": "r"},
    ]
    assert [t for _, t in data.prompts_and_targets(rows)] == ["a b c", "a b c d e", "x y"]
    assert [p for p, _ in data.prompts_and_targets(rows)] == [[USER]] * 3
    words = lambda text: len(text.split())  # noqa: E731
    prompt_words = lambda messages: sum(words(m["content"]) for m in messages)  # noqa: E731  (USER: 3)
    assert data.longest_target_tokens(rows, words, cap=1024) == 6  # 5 + the end-of-turn token
    assert data.longest_target_tokens(rows, words, cap=1024, count_prompt=prompt_words) == 6
    # 8 tokens of sequence: 3 of prompt leave 5 for the completion, which is where training cut it.
    assert data.longest_target_tokens(rows, words, cap=8, count_prompt=prompt_words) == 5
    assert data.longest_target_tokens(rows, words, cap=4) == 4  # without prompt counts: the cap alone
    assert data.longest_target_tokens(rows, words, cap=2, count_prompt=prompt_words) == 0
    with pytest.raises(DatasetError, match="the last message must be the assistant"):
        data.longest_target_tokens([{"messages": [USER]}], words, cap=10)
