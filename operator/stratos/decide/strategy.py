"""Strategy selector (paper, "Knowledge Alignment"/"Knowledge Injection"; README, "The decisions"). Pure.

The chosen teacher's probe accuracy says whether the task lies inside its knowledge:
- accuracy >= A: knowledge alignment. The teacher's own forward chain-of-thought is good training
  data; train with LoRA SFT (default) or, on request, GRPO / DPO / white-box KD.
- accuracy < A: knowledge injection. The teacher is given question *and* answer and asked for the
  reasoning that bridges them (reverse reasoning), plus synthetic augmentation and rejection
  sampling. The paper trains this with LoRA SFT only: RL-style methods cannot inject knowledge the
  teacher (and so the reward-free rollout) lacks.

An explicit strategy is honoured, and the reason says when it contradicts the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stratos.decide.teachers import meets, pct

Strategy = Literal["alignment", "injection"]
Algorithm = Literal["sft-lora", "grpo", "white-box-kd", "dpo"]

STRATEGIES = ("auto", "alignment", "injection")
ALGORITHMS = ("auto", "sft-lora", "grpo", "white-box-kd", "dpo")
INJECTION_ALGORITHMS = ("sft-lora",)

_ALGORITHM_WORDS = {
    "sft-lora": "LoRA SFT",
    "grpo": "GRPO with the task verifier as reward",
    "white-box-kd": "white-box knowledge distillation",
    "dpo": "DPO",
}


class StrategyError(ValueError):
    """The requested strategy/algorithm combination is invalid (the API rejects it too)."""


@dataclass(frozen=True)
class StrategyChoice:
    selected: Strategy
    algorithm: Algorithm
    reason: str


def select_strategy(
    teacher_accuracy: float | None,
    *,
    min_accuracy: float,
    requested_strategy: str = "auto",
    requested_algorithm: str = "auto",
) -> StrategyChoice:
    """Choose alignment or injection and the training algorithm; explain why in one sentence.

    ``teacher_accuracy`` is the selected teacher's probe accuracy; None means there is no evidence
    (no teacher evaluated), which only an explicit strategy can get past.

    When the strategy is *auto* and resolves to injection while the user asked for an algorithm
    other than LoRA SFT, the algorithm falls back to LoRA SFT and the reason says so: the API can
    only reject the explicit combination, and failing the job for evidence it could not foresee
    would be unhelpful.
    """
    if requested_strategy not in STRATEGIES:
        raise StrategyError(f"unknown strategy {requested_strategy!r} (expected one of {STRATEGIES})")
    if requested_algorithm not in ALGORITHMS:
        raise StrategyError(f"unknown algorithm {requested_algorithm!r} (expected one of {ALGORITHMS})")
    if requested_strategy == "injection" and requested_algorithm not in ("auto", *INJECTION_ALGORITHMS):
        raise StrategyError(
            f"injection trains with LoRA SFT only; algorithm {requested_algorithm!r} is not allowed"
        )

    a = pct(min_accuracy)
    evidence: Strategy | None
    if teacher_accuracy is None:
        evidence = None
        evidence_text = "no teacher accuracy is known"
    elif meets(teacher_accuracy, min_accuracy):
        evidence = "alignment"
        evidence_text = f"teacher accuracy {pct(teacher_accuracy)} meets the required {a}"
    else:
        evidence = "injection"
        evidence_text = f"teacher accuracy {pct(teacher_accuracy)} is below the required {a}"

    selected: Strategy
    if requested_strategy == "auto":
        if evidence is None:
            raise StrategyError("strategy auto needs the selected teacher's accuracy; none is known")
        selected = evidence
        reason = f"{evidence_text}: knowledge {selected}"
    else:
        selected = "alignment" if requested_strategy == "alignment" else "injection"
        reason = f"knowledge {selected} requested"
        if evidence is None:
            reason += f" ({evidence_text})"
        elif evidence != selected:
            reason += f" although {evidence_text}, which would call for {evidence}"
        else:
            reason += f"; consistent with the evidence ({evidence_text})"

    if selected == "alignment":
        reason += " (forward chain-of-thought from the teacher)"
    else:
        reason += " (reverse reasoning from the known answer, synthetic augmentation, rejection sampling)"

    algorithm: Algorithm
    if requested_algorithm == "auto":
        algorithm = "sft-lora"
        reason += f", trained with {_ALGORITHM_WORDS[algorithm]}"
    elif selected == "injection" and requested_algorithm not in INJECTION_ALGORITHMS:
        algorithm = "sft-lora"
        reason += (
            f", trained with LoRA SFT instead of the requested {requested_algorithm}: injection "
            "cannot use RL or preference methods, the teacher lacks the knowledge they would reinforce"
        )
    else:
        algorithm = _as_algorithm(requested_algorithm)
        reason += f", trained with {_ALGORITHM_WORDS[algorithm]} (requested)"
    return StrategyChoice(selected=selected, algorithm=algorithm, reason=reason)


def _as_algorithm(name: str) -> Algorithm:
    if name == "sft-lora":
        return "sft-lora"
    if name == "grpo":
        return "grpo"
    if name == "white-box-kd":
        return "white-box-kd"
    if name == "dpo":
        return "dpo"
    raise StrategyError(f"unknown algorithm {name!r}")
