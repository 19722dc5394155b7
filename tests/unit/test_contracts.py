"""The stage contract's models: what the controller writes is what the program parses, and what the
program reports is what the controller reads, also after the result writer cut it down."""

from __future__ import annotations

import json

import pytest

from stratos.api.spec import EndpointSpec
from stratos.contracts.evaluate import EvaluateResult
from stratos.contracts.runs import SecretEnv
from stratos.contracts.stage_io import StageResult, compact_json
from stratos.contracts.student_probe import StudentProbeResult
from stratos.contracts.synthesize import SynthesizeResult
from stratos.contracts.teacher import connection
from stratos.contracts.teacher_eval import TeacherEvalConfig, TeacherEvalResult
from stratos.contracts.train import TrainResult
from stratos.contracts.vocab_check import VocabCheckResult

RESULTS: tuple[type[StageResult], ...] = (
    TeacherEvalResult,
    VocabCheckResult,
    StudentProbeResult,
    SynthesizeResult,
    TrainResult,
    EvaluateResult,
)


@pytest.mark.parametrize("model", RESULTS, ids=lambda m: m.__name__)
def test_a_missing_failed_or_cut_down_result_still_reads(model: type[StageResult]) -> None:
    assert model.read(None).ok is True
    failed = model.read({"ok": False, "error": "boom", "kind": "TeacherUnavailable"})
    assert (failed.ok, failed.error, failed.kind) == (False, "boom", "TeacherUnavailable")
    # The writer's last resort keeps top-level scalars only; a newer image may add fields.
    assert model.read({"ok": True, "truncated": True, "aFieldFromANewerImage": 1}).truncated is True


def test_cost_is_written_as_status_spells_it_and_read_in_either_spelling() -> None:
    written = SynthesizeResult(kept=3, prompt_tokens=10, completion_tokens=5, cost_usd=0.25).dump()
    assert written == {"kept": 3, "promptTokens": 10, "completionTokens": 5, "costUsd": 0.25}
    assert SynthesizeResult.read(written).cost_usd == 0.25
    assert TeacherEvalResult.read({"costUSD": 0.5}).cost_usd == 0.5  # an older worker image's result


def test_a_result_read_back_through_the_writer_keeps_its_fields() -> None:
    result = TeacherEvalResult(
        teacher="t",
        accuracy=0.3,
        samples=20,
        correct=6,
        prompt_tokens=100,
        completion_tokens=50,
        cost_usd=0.00015,
        traces_path="/x",
        requests=20,
        resumed=0,
        rejected=0,
    )
    text = compact_json({"ok": True, **result.dump()})
    assert TeacherEvalResult.read(json.loads(text)) == result


def test_the_teacher_eval_config_is_the_connection_plus_the_probe() -> None:
    endpoint = EndpointSpec.model_validate(
        {"baseURL": "https://api.example.com/v1", "model": "m", "apiKeySecretRef": {"name": "s", "key": "k"}}
    )
    teacher, secrets = connection("gpt", endpoint, 2.5, 4, "TEACHER_API_KEY")
    assert secrets == (SecretEnv("TEACHER_API_KEY", "s", "k"),)
    config = TeacherEvalConfig(**teacher.model_dump(exclude_unset=True), task={}, output_dir="/o")
    # Exactly what the controller set, in the program's spelling; the program's defaults fill the rest.
    assert config.dump() == {
        "teacher": "gpt",
        "baseURL": "https://api.example.com/v1",
        "model": "m",
        "apiKeyEnv": "TEACHER_API_KEY",
        "costPerMillionTokens": 2.5,
        "maxConcurrency": 4,
        "task": {},
        "outputDir": "/o",
    }
    parsed = TeacherEvalConfig.model_validate(config.dump())
    assert (parsed.name, parsed.max_retries, parsed.temperature) == ("gpt", 5, 0.0)
    no_key = EndpointSpec.model_validate({"baseURL": "https://api.example.com/v1", "model": "m"})
    assert connection("gpt", no_key, 0.0, 1, "TEACHER_API_KEY")[1] == ()
    assert connection("gpt", no_key, 0.0, 1, "TEACHER_API_KEY")[0].api_key_env is None
