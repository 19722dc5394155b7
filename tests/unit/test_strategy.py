"""Strategy selector: alignment when the teacher knows the task, injection when it does not."""

from __future__ import annotations

import pytest

from stratos.decide.strategy import StrategyError, select_strategy


def test_auto_alignment_when_teacher_meets_requirement():
    c = select_strategy(0.21, min_accuracy=0.15)
    assert (c.selected, c.algorithm) == ("alignment", "sft-lora")
    assert c.reason.startswith("teacher accuracy 21% meets the required 15%: knowledge alignment")
    assert "LoRA SFT" in c.reason


def test_auto_boundary_is_inclusive():
    assert select_strategy(0.15, min_accuracy=0.15).selected == "alignment"
    assert select_strategy(3 / 20, min_accuracy=0.15).selected == "alignment"
    assert select_strategy(0.1499, min_accuracy=0.15).selected == "injection"


def test_auto_injection_when_teacher_below_requirement():
    c = select_strategy(0.04, min_accuracy=0.15)
    assert (c.selected, c.algorithm) == ("injection", "sft-lora")
    assert c.reason.startswith("teacher accuracy 4% is below the required 15%: knowledge injection")
    assert "reverse reasoning" in c.reason


@pytest.mark.parametrize("algorithm", ["grpo", "dpo", "white-box-kd", "sft-lora"])
def test_alignment_honours_requested_algorithm(algorithm):
    c = select_strategy(0.9, min_accuracy=0.5, requested_algorithm=algorithm)
    assert (c.selected, c.algorithm) == ("alignment", algorithm)
    assert "(requested)" in c.reason


@pytest.mark.parametrize("algorithm", ["grpo", "dpo", "white-box-kd"])
def test_explicit_injection_with_non_sft_algorithm_is_an_error(algorithm):
    with pytest.raises(StrategyError):
        select_strategy(0.1, min_accuracy=0.5, requested_strategy="injection", requested_algorithm=algorithm)


def test_auto_resolving_to_injection_falls_back_to_sft_and_says_so():
    c = select_strategy(0.1, min_accuracy=0.5, requested_algorithm="grpo")
    assert (c.selected, c.algorithm) == ("injection", "sft-lora")
    assert "instead of the requested grpo" in c.reason


def test_explicit_strategy_honoured_and_contradiction_noted():
    c = select_strategy(0.04, min_accuracy=0.15, requested_strategy="alignment")
    assert c.selected == "alignment"
    assert c.reason.startswith("knowledge alignment requested although teacher accuracy 4% is below")
    assert "would call for injection" in c.reason
    c = select_strategy(0.9, min_accuracy=0.15, requested_strategy="injection")
    assert (c.selected, c.algorithm) == ("injection", "sft-lora")
    assert "would call for alignment" in c.reason
    c = select_strategy(0.9, min_accuracy=0.15, requested_strategy="alignment")
    assert "consistent with the evidence" in c.reason


def test_no_evidence():
    with pytest.raises(StrategyError):
        select_strategy(None, min_accuracy=0.1)
    c = select_strategy(None, min_accuracy=0.1, requested_strategy="injection")
    assert c.selected == "injection"
    assert "no teacher accuracy is known" in c.reason


def test_unknown_names_rejected():
    with pytest.raises(StrategyError):
        select_strategy(0.5, min_accuracy=0.1, requested_strategy="magic")
    with pytest.raises(StrategyError):
        select_strategy(0.5, min_accuracy=0.1, requested_algorithm="ppo")
