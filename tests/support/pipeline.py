"""A small DistillationJob that runs every stage in seconds: tiny students, the programmatic teacher."""

from __future__ import annotations

from typing import Any

CLAIM = "stratos-data"


def pipeline_job(name: str, pool: str, teacher_url: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": {"builtin": "mahjong", "sampleSize": 6, "trainSize": 24, "testSize": 6, "seed": 3},
        "requirements": {"minAccuracy": 0.0},
        "servers": {"nodeSelector": {"stratos.test/pool": pool}},
        "teachers": [
            {
                "name": "prog",
                "endpoint": {"baseURL": teacher_url, "model": "programmatic"},
                "costPerMillionTokens": 1,
            }
        ],
        "students": [
            {
                "name": "tiny-a",
                "model": {"uri": "/models/tiny-a", "parameters": 2e5, "layers": 2, "hiddenSize": 64},
            },
            {
                "name": "tiny-b",
                "model": {"uri": "/models/tiny-b", "parameters": 2e5, "layers": 2, "hiddenSize": 64},
            },
        ],
        "distillation": {
            "strategy": "injection",
            "targetSamples": 32,
            "sequenceLength": 512,
            "microBatchSize": 8,
            "lora": {"rank": 8, "alpha": 16},
        },
        "serving": {"enabled": False, "engine": "transformers"},
        "storage": {"pvc": {"claimName": CLAIM}},
    }
    spec.update(overrides)
    return {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": name},
        "spec": spec,
    }
