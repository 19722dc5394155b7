"""Teacher selector: hand-computed cases and the paper's Mahjong numbers (Table 3)."""

from __future__ import annotations

import pytest

from stratos.contracts.runs import RunStatus
from stratos.decide.strategy import select_strategy
from stratos.decide.teachers import TeacherEval, select_teacher
from stratos.pipeline.stage_teachers import teacher_eval


def ev(name: str, acc: float, price: float, *, samples: int = 100, error: str | None = None) -> TeacherEval:
    return TeacherEval(
        name=name,
        accuracy=acc,
        samples=samples,
        correct=round(acc * samples),
        prompt_tokens=1000,
        completion_tokens=500,
        cost_usd=1500 / 1e6 * price,
        cost_per_million_tokens=price,
        error=error,
    )


def verdicts(choice):
    return {c.name: c.verdict for c in choice.candidates}


# The paper's Table 3 (Mahjong): GPT-4o 4%, Claude 3.5 Sonnet 9%, DeepSeek-R1 21%.
MAHJONG = [ev("gpt-4o", 0.04, 5.0), ev("claude-3-5-sonnet", 0.09, 6.0), ev("deepseek-r1", 0.21, 2.19)]


def test_paper_mahjong_a15_only_r1_meets():
    choice = select_teacher(MAHJONG, min_accuracy=0.15)
    assert choice.selected == "deepseek-r1"
    assert choice.accuracy == 0.21
    assert "only teacher meeting the required accuracy 15%" in choice.reason
    v = verdicts(choice)
    assert v["gpt-4o"] == "accuracy 4% below the required 15%"
    assert v["claude-3-5-sonnet"] == "accuracy 9% below the required 15%"
    assert v["deepseek-r1"].startswith("selected")
    # 21% >= 15%: the task is (just) inside the teacher's knowledge -> alignment with LoRA SFT.
    strategy = select_strategy(choice.accuracy, min_accuracy=0.15)
    assert (strategy.selected, strategy.algorithm) == ("alignment", "sft-lora")


def test_paper_mahjong_a25_nobody_meets_most_accurate_and_injection():
    choice = select_teacher(MAHJONG, min_accuracy=0.25)
    assert choice.selected == "deepseek-r1"
    assert choice.reason.startswith(
        "no teacher meets the required accuracy 25%; deepseek-r1 is the most accurate"
    )
    v = verdicts(choice)
    assert v["gpt-4o"] == "accuracy 4% below deepseek-r1's 21% (no teacher meets 25%)"
    assert v["claude-3-5-sonnet"] == "accuracy 9% below deepseek-r1's 21% (no teacher meets 25%)"
    strategy = select_strategy(choice.accuracy, min_accuracy=0.25)
    assert (strategy.selected, strategy.algorithm) == ("injection", "sft-lora")


def test_several_meet_cheapest_wins():
    # Paper's GSM8K case: all teachers pass, Qwen-72B is chosen for its lowest inference cost.
    evals = [ev("gpt-4o", 0.92, 5.0), ev("qwen-72b", 0.80, 0.90), ev("llama-405b", 0.88, 3.0)]
    choice = select_teacher(evals, min_accuracy=0.65)
    assert choice.selected == "qwen-72b"
    assert "cheapest of 3 teachers meeting 65%" in choice.reason
    v = verdicts(choice)
    assert v["gpt-4o"] == "more expensive than qwen-72b ($5.00 vs $0.90 per 1M tokens) while both meet 65%"
    assert (
        v["llama-405b"] == "more expensive than qwen-72b ($3.00 vs $0.90 per 1M tokens) while both meet 65%"
    )
    assert v["qwen-72b"] == "selected: cheapest of 3 teachers meeting 65%"
    # candidates keep input order
    assert [c.name for c in choice.candidates] == ["gpt-4o", "qwen-72b", "llama-405b"]


def test_cheap_but_below_threshold_loses_to_qualified():
    evals = [ev("cheap", 0.10, 0.1), ev("good", 0.5, 4.0)]
    choice = select_teacher(evals, min_accuracy=0.3)
    assert choice.selected == "good"
    assert verdicts(choice)["cheap"] == "accuracy 10% below the required 30%"


def test_threshold_is_inclusive_with_fraction_rounding():
    # 3/20 == 0.15 must meet A=0.15 whatever float rounding does.
    e = TeacherEval(name="t", accuracy=3 / 20, samples=20, correct=3, cost_per_million_tokens=1)
    choice = select_teacher([e, ev("u", 0.14, 0.5)], min_accuracy=0.15)
    assert choice.selected == "t"


def test_price_tie_among_qualified_prefers_accuracy_then_name():
    evals = [ev("b", 0.6, 1.0), ev("a", 0.6, 1.0), ev("c", 0.7, 1.0)]
    choice = select_teacher(evals, min_accuracy=0.5)
    assert choice.selected == "c"
    v = verdicts(choice)
    assert v["a"] == "same price as c ($1.00 per 1M tokens) but less accurate (60% vs 70%)"
    choice = select_teacher([ev("b", 0.6, 1.0), ev("a", 0.6, 1.0)], min_accuracy=0.5)
    assert choice.selected == "a"
    assert verdicts(choice)["b"] == "tied with a on price and accuracy; a wins by name order"


def test_accuracy_tie_when_none_meets_prefers_cheaper_then_name():
    evals = [ev("x", 0.2, 3.0), ev("y", 0.2, 1.0), ev("z", 0.1, 0.1)]
    choice = select_teacher(evals, min_accuracy=0.9)
    assert choice.selected == "y"
    v = verdicts(choice)
    assert v["x"] == "as accurate as y (20%) but more expensive ($3.00 vs $1.00 per 1M tokens)"
    assert v["z"] == "accuracy 10% below y's 20% (no teacher meets 90%)"
    choice = select_teacher([ev("q", 0.2, 1.0), ev("p", 0.2, 1.0)], min_accuracy=0.9)
    assert choice.selected == "p"
    assert verdicts(choice)["q"] == "tied with p on accuracy and price; p wins by name order"


def test_failed_teachers_are_excluded_and_recorded():
    evals = [
        ev("best-but-broken", 0.0, 0.0, error="TeacherUnavailable: authentication failed (HTTP 401)"),
        ev("ok", 0.3, 2.0),
    ]
    choice = select_teacher(evals, min_accuracy=0.5)
    assert choice.selected == "ok"
    assert (
        verdicts(choice)["best-but-broken"] == "failed: TeacherUnavailable: authentication failed (HTTP 401)"
    )
    assert "failed: best-but-broken" in choice.reason
    row = next(c for c in choice.candidates if c.name == "best-but-broken")
    assert row.error == "TeacherUnavailable: authentication failed (HTTP 401)"


def test_all_failed_selects_none_with_reasons():
    evals = [ev("a", 0, 1, error="connection refused"), ev("b", 0, 1, error="model not found")]
    choice = select_teacher(evals, min_accuracy=0.5)
    assert choice.selected is None
    assert choice.accuracy is None
    assert choice.reason == "every teacher failed (a: connection refused; b: model not found)"
    assert verdicts(choice) == {"a": "failed: connection refused", "b": "failed: model not found"}


def test_no_teachers():
    assert select_teacher([], min_accuracy=0.1).selected is None


def test_duplicate_names_rejected():
    with pytest.raises(ValueError):
        select_teacher([ev("a", 0.1, 1), ev("a", 0.2, 1)], min_accuracy=0.1)


def test_min_accuracy_zero_everyone_qualifies():
    choice = select_teacher([ev("a", 0.0, 2.0), ev("b", 0.9, 3.0)], min_accuracy=0.0)
    assert choice.selected == "a"


def test_a_teacher_eval_result_is_read_by_one_function():
    ok = {
        "ok": True,
        "teacher": "t",
        "accuracy": 0.3,
        "samples": 20,
        "correct": 6,
        "promptTokens": 100,
        "completionTokens": 50,
        "costUSD": 0.00015,
        "tracesPath": "/x",
    }
    e = teacher_eval("t", 1.0, RunStatus("Succeeded", result=ok))
    assert (e.accuracy, e.samples, e.correct, e.prompt_tokens, e.completion_tokens) == (0.3, 20, 6, 100, 50)
    assert e.cost_usd == 0.00015 and e.error is None
    bad = teacher_eval(
        "t",
        1,
        RunStatus(
            "Failed", result={"ok": False, "error": "authentication failed", "kind": "TeacherUnavailable"}
        ),
    )
    assert bad.error == "TeacherUnavailable: authentication failed"
    assert teacher_eval("t", 1, RunStatus("Failed", message="no result")).error == "no result"


def test_the_joint_rule_picks_the_lowest_expected_synthesis_cost_not_the_list_price() -> None:
    # cheap: $1 per 1M tokens, 100 samples with 40,000 tokens (400 per answer), accuracy 0.5
    #   -> 1 x 400 / 1e6 / 0.5 = $0.0008 per verified answer
    # dear:  $2 per 1M tokens, 100 samples with 10,000 tokens (100 per answer), accuracy 0.8
    #   -> 2 x 100 / 1e6 / 0.8 = $0.00025 per verified answer
    cheap = TeacherEval("cheap", 0.5, 100, 50, 20000, 20000, 0.04, cost_per_million_tokens=1.0)
    dear = TeacherEval("dear", 0.8, 100, 80, 5000, 5000, 0.02, cost_per_million_tokens=2.0)
    assert cheap.expected_usd_per_answer() == pytest.approx(0.0008)
    assert dear.expected_usd_per_answer() == pytest.approx(0.00025)
    assert dear.synthesis_usd(10000) == pytest.approx(2.5)
    assert select_teacher([cheap, dear], min_accuracy=0.4).selected == "cheap"  # the paper: list price
    joint = select_teacher([cheap, dear], min_accuracy=0.4, by="expected")
    assert joint.selected == "dear"
    assert "cheapest per verified answer of 2 teachers meeting 40%" in joint.reason
    assert verdicts(joint)["cheap"].startswith("higher expected synthesis cost than dear ($0.800 vs $0.250")
    # Below the bar nobody qualifies: the most accurate wins, whatever the rule.
    assert select_teacher([cheap, dear], min_accuracy=0.9, by="expected").selected == "dear"
    # Without token counts the list price decides (the evaluation reported none).
    blind = [
        TeacherEval("a", 0.9, cost_per_million_tokens=3.0),
        TeacherEval("b", 0.9, cost_per_million_tokens=1.0),
    ]
    assert select_teacher(blind, min_accuracy=0.5, by="expected").selected == "b"
