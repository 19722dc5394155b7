"""Smoke tests of the benchmark scripts (benchmarks/): each core function runs on a tiny input and returns
well-formed figures. No timing is asserted: the benchmarks measure, they do not pass or fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import cloud, decision_quality, selection_speed  # noqa: E402
from benchmarks import operator_scale as ops  # noqa: E402

from stratos.api.spec import DistillationJobSpec  # noqa: E402


def test_cloud_is_reproducible_and_in_the_paper_mix() -> None:
    a = cloud.make_cloud(200, np.random.default_rng(1))
    b = cloud.make_cloud(200, np.random.default_rng(1))
    assert a == b and len({f.name for f in a}) == 200
    assert {f.gpu.name for f in a} <= {name for name, _ in cloud.PAPER_GPU_MIX}
    assert all(f.hourly_cost > 0 and 5 <= f.latency_ms <= 230 and f.gpu_count in (1, 2, 4, 8) for f in a)
    node = cloud.node_object(a[0])
    assert node["metadata"]["annotations"]["stratos.io/latency-ms"] == f"{a[0].latency_ms:g}"


def test_write_json_has_no_nan(tmp_path: Path) -> None:
    path = cloud.write_json("x", {"a": float("nan"), "b": [float("inf"), 1.5]}, out_dir=tmp_path)
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.5]}


def test_exact_pareto_mask_by_hand() -> None:
    objectives = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [0.5, 3.0, 1.0], [1.0, 1.0, 1.0]])
    # Row 1 is dominated by row 0; rows 0 and 3 are equal, so neither dominates the other.
    assert selection_speed.exact_pareto_mask(objectives).tolist() == [True, False, True, True]


def test_selection_speed_smoke() -> None:
    report = selection_speed.run([50, 200], quick=True, inventories=2, pin=False)
    assert [r["nodes"] for r in report["results"]] == [50, 200]
    for r in report["results"]:
        for key in ("selectServerSeconds", "naiveExactParetoSeconds", "gatherCandidatesSeconds"):
            stats = r[key]
            assert stats["n"] > 0 and 0 < stats["min"] <= stats["median"] <= stats["p95"] <= stats["max"]
        assert r["checks"]["sameChoiceTwice"] == "2/2" and r["checks"]["sameChoiceShuffled"] == "2/2"
        assert r["checks"]["pfgChoiceOnExactParetoFront"] == "2/2"
        assert r["gatheredCandidates"] == r["nodes"] and r["gridSize"] >= 1
    assert "50->200" in report["growthExponent"]["selectServer"]
    assert "200 " in selection_speed.render(report).replace(",", "")
    json.dumps(cloud.finite(report), allow_nan=False)


def test_decision_quality_smoke() -> None:
    config = decision_quality.configs()[0]
    result = decision_quality.run_config(config, 3, cluster=300, grid=False)
    assert list(result["rows"]) == list(decision_quality.STRATEGIES)
    for row in result["rows"].values():
        assert 0.0 <= row["utility"] <= 1.0 and 0.0 <= row["delivered"] <= 1.0
        assert row["utilityStrict"] <= row["utility"] + 1e-12
        if row["delivered"]:
            assert 0 < row["accuracy"] <= 1 and row["costUsd"] > 0 and row["trainingHours"] > 0
    assert result["rows"]["cost-first"]["delivered"] == 1.0
    assert result["rows"]["cost-first"]["meets"]["A"] == 0.0  # the 1B misses A = 0.65 after training
    for mode in ("lenient", "strict", "relative"):
        mean = result[mode]["mean"]["Stratos"]
        assert mean["ci95"][0] <= mean["value"] <= mean["ci95"][1]
    assert 0 < result["strict"]["ofOracle"]["value"] <= 1.0 + 1e-9
    assert set(result["winRates"]) == set(decision_quality.BASELINES)
    assert len(decision_quality.weight_grid()) == 286
    assert "Stratos" in decision_quality.render({"configs": [result]})


def test_decision_quality_scores_by_hand() -> None:
    # One seed, two strategies, metrics (accuracy, latency, cost, time): the first is better everywhere.
    values = np.array([[[0.8, 10.0, 5.0, 1.0], [0.4, 20.0, 10.0, 2.0]]])
    delivered = np.array([[True, True]])
    norm = decision_quality.normalised(values, delivered, method="minmax")
    assert norm.tolist() == [[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]]
    ratio = decision_quality.normalised(values, delivered, method="ratio")
    assert ratio[0, 1].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert decision_quality.final_accuracy("llama-3-2-3b", "qwen-72b", "sft-lora", "scaled") == pytest.approx(
        0.7195
    )
    # The configuration space normalises absolutely: accuracy 0.4..0.8, latency 10..30, cost 5..15, time 1..3.
    lo, hi = np.array([0.4, 10.0, 5.0, 1.0]), np.array([0.8, 30.0, 15.0, 3.0])
    space = decision_quality.Space(np.zeros((0, 4)), np.zeros(0, bool), lo, hi, *[np.zeros(0, np.int64)] * 3,
                                   np.zeros(0, bool), np.zeros(0, bool))  # fmt: skip
    assert space.normalise(np.array([0.6, 20.0, 15.0, 0.5])).tolist() == pytest.approx([0.5, 0.5, 0.0, 1.0])
    # Paired bootstrap: a strategy twice as good everywhere is +100%, with a degenerate interval.
    utility = np.tile(np.array([0.8, 0.0, 0.4, 0.2, 0.2, 0.2, 0.2]), (5, 1))
    boot = decision_quality.bootstrap(utility, np.ones(5), np.random.default_rng(0), resamples=50)
    assert boot["bestBaseline"] == "accuracy-first"
    assert boot["improvementOverBestBaseline"] == {"improvement": 1.0, "ci95": [1.0, 1.0]}
    assert boot["ofOracle"]["value"] == pytest.approx(0.8)


def test_committed_decision_quality_results_come_from_the_committed_code() -> None:
    data = json.loads((REPO_ROOT / "benchmarks" / "results" / "decision_quality.json").read_text())
    revision = data["machine"]["revision"]
    assert not revision.endswith("+dirty"), "results were measured on uncommitted code"

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    if git("cat-file", "-e", f"{revision}^{{commit}}").returncode != 0:
        pytest.skip(f"revision {revision} is not in this clone's history (shallow clone?)")
    assert git("merge-base", "--is-ancestor", revision, "HEAD").returncode == 0
    # The code the figures depend on has not changed since they were measured.
    changed = git(
        "diff", "--name-only", revision, "HEAD", "--", *decision_quality.MEASURED_CODE
    ).stdout.split()
    assert changed == [], f"re-run the benchmark: {changed} changed since {revision}"


def test_operator_scale_helpers() -> None:
    policy = ops.audit_policy([ops.OPERATOR_USER, "admin"])
    assert "level: Metadata" in policy and ops.OPERATOR_USER in policy and policy.rstrip().endswith("None")
    assert [ops.node_ttl(n) for n in (50, 400, 3732, 20000)] == [0, 15, 300, 600]

    facts = cloud.make_cloud(1, np.random.default_rng(2))[0]
    node = ops.node_manifest(facts, ttl=300)
    assert node["metadata"]["annotations"][ops.TTL_ANNOTATION] == "300"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == str(facts.gpu_count)

    dj = ops.dj_manifest(7, np.random.default_rng(0))
    spec = DistillationJobSpec.model_validate(dj["spec"])
    assert dj["metadata"]["name"] == "dj-007" and spec.teachers[0].name == ops.TEACHER

    pod = {"metadata": {"uid": "u1"}, "spec": {"containers": [{"name": "stage", "image": "img"}]}}
    status = ops.completed_pod_status(pod, '{"ok": true}')
    term = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Succeeded" and term["exitCode"] == 0 and term["message"] == '{"ok": true}'


def test_operator_scale_audit_parsing() -> None:
    def event(audit_id: str, when: str, user: str, agent: str, verb: str, resource: str | None) -> str:
        body: dict[str, object] = {
            "auditID": audit_id,
            "stage": "ResponseComplete",
            "requestReceivedTimestamp": when,
            "user": {"username": user},
            "userAgent": agent,
            "verb": verb,
            "requestURI": "/api",
        }
        if resource:
            body["objectRef"] = {"resource": resource}
        return json.dumps(body)

    kcm = "kube-controller-manager/v1.37.2 (linux/amd64) kubernetes/abc/job-controller"
    lines = [
        event("a", "2026-01-01T00:00:01.000000Z", ops.OPERATOR_USER, "kopf", "create", "jobs"),
        event("a", "2026-01-01T00:00:01.000000Z", ops.OPERATOR_USER, "kopf", "create", "jobs"),  # same ID
        event("b", "2026-01-01T00:00:03.000000Z", ops.OPERATOR_USER, "kopf", "get", None),
        event("c", "2026-01-01T00:00:02.000000Z", "admin", kcm, "update", "jobs"),
        "not json",
    ]
    requests = ops.audit_requests(lines)
    assert {r.actor for r in requests.values()} == {"operator", "kcm:job-controller"}
    t0 = requests["a"].time
    summary = ops.summarise(requests.values(), [("first", t0, t0 + 1.5), ("all", t0, t0 + 10)])
    assert summary["total"] == 2 and summary["byPhase"]["first"]["byVerbResource"] == {"create jobs": 1}
    assert summary["byPhase"]["all"]["byVerbResource"] == {"create jobs": 1, "get /api": 1}
    activity = ops.control_plane_activity(requests.values(), [("all", t0, t0 + 10)])
    assert activity["all"] == {"total": 1, "top": {"kcm:job-controller update jobs": 1}}

    latencies = ops.transition_latencies({"x": 0.0, "y": 1.0}, {"x": 1.0, "y": 2.5}, {"x": 1.5})
    assert latencies["measured"] == 1 and latencies["missing"] == ["y"]
    assert latencies["podCompletedToNextJob"]["median"] == 1.5
    assert latencies["jobCompleteToNextJob"]["median"] == 0.5


def test_distillation_quality_statistics_by_hand() -> None:
    from benchmarks import distillation_quality as dq

    low, high = dq.wilson(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-3) and high == pytest.approx(0.1744, abs=1e-3)
    always, never = [True] * 50, [False] * 50
    results = [
        dq.ArmResult("original", seed, never[:40] + always[:10], rows=100, steps=5) for seed in (0, 1, 2)
    ] + [dq.ArmResult("curated", seed, never[:30] + always[:20], rows=200, steps=5) for seed in (0, 1, 2)]
    summary = dq.summarise(results, teacher=[True] + [False] * 9)
    assert summary["arms"]["original"]["accuracy"] == pytest.approx(0.2)
    assert summary["arms"]["curated"]["accuracy"] == pytest.approx(0.4)
    diff = summary["differences"]["curated - original"]
    # Paired by hand: curated is right on hands 30-39 as well, everywhere else the same.
    assert diff["difference"] == pytest.approx(0.2) and 0.0 < diff["ci95"][0] <= 0.2 <= diff["ci95"][1]
    assert summary["teacher"]["accuracy"] == pytest.approx(0.1) and summary["teacher"]["samples"] == 10


def test_distillation_quality_data_is_verified_and_held_out() -> None:
    from benchmarks import distillation_quality as dq

    from stratos.tasks import build_task
    from stratos.tasks.mahjong_solver import winning_tiles
    from stratos.tasks.mahjong_tiles import canonical_answer

    s = dq.TINY
    task = build_task(dq.task_spec(s))
    synthetic = dq.synthetic_hands(task, 20, seed=1)
    assert synthetic == dq.synthetic_hands(task, 20, seed=1)  # reproducible per seed
    assert all(canonical_answer(winning_tiles(h.meta["tiles"])) == h.answer for h in synthetic)
    assert not {tuple(sorted(h.meta["tiles"])) for h in synthetic} & task.test_keys()
    sample = task.load("train")[0]
    text = dq.rationale(sample, task)  # the programmatic teacher's reverse reasoning
    assert text.startswith("Step 1") and text.rstrip(".").endswith(sample.answer)


def test_distillation_quality_labels_overridden_sizes_and_refuses_a_dirty_tree(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks import distillation_quality as dq

    assert dq._mode(False, 1, {}) == "default"
    assert dq._mode(False, 1, {"workers": 4}) == "default"  # parallelism changes no figure
    assert dq._mode(False, 4, {}) == "scale"
    assert dq._mode(True, 1, {"seeds": 1}) == "tiny"
    assert dq._mode(False, 1, {"test": 200, "seeds": 3, "workers": 2}) == "reduced (seeds, test overridden)"

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the benchmark ran from a dirty tree")

    monkeypatch.setattr(dq, "run", must_not_run)
    monkeypatch.setattr(dq, "revision", lambda: "abc1234+dirty")
    assert dq.main(["--tiny"]) == 2
    assert "refusing" in capsys.readouterr().out
    monkeypatch.setattr(dq, "revision", lambda: "abc1234")
    monkeypatch.setattr(dq, "_script_dirty", lambda: True)  # the script itself changed, operator/ did not
    assert dq.main(["--tiny"]) == 2
