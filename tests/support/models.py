"""Model facts as the decisions see them, for tests that know only a parameter count."""

from __future__ import annotations

from types import SimpleNamespace

from stratos.decide.models import ModelFacts


def facts(parameters: float) -> ModelFacts:
    """The facts of a model spec that gives its parameter count and nothing else."""
    return ModelFacts.from_spec(
        SimpleNamespace(
            parameters=parameters,
            layers=None,
            hidden_size=None,
            vocab_size=None,
            num_attention_heads=None,
            num_key_value_heads=None,
            intermediate_size=None,
        )
    )
