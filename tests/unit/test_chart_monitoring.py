"""The chart's PrometheusRule and Grafana dashboard: rendered by the real helm, every expression parsed
by a PromQL parser, and every metric and label it reads one the operator really exports (taken from
the operator's own collectors, fed a full status)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client import REGISTRY
from test_chart import CHART, RELEASE, SCENARIOS, helm, of_kind, one, render  # the same helm renders

from stratos.controller import metrics
from stratos.controller.metrics import JOB_METRIC_NAMES, OPERATOR_METRIC_NAMES, JobMetrics
from support.monitoring import dashboard, dashboard_expressions, rule_expressions, usage

# Labels Prometheus adds to every series of a scraped target (the ServiceMonitor keeps the per-job
# series' own namespace label: honorLabels).
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "endpoint", "container"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SERVING: dict[str, Any] = {
    "phase": "Serving",
    "stage": "Serving",
    "observedGeneration": 1,
    "conditions": [
        {
            "type": t,
            "status": "True",
            "reason": "R",
            "message": "",
            "lastTransitionTime": f"2026-01-01T00:00:0{i}Z",
        }
        for i, t in enumerate(
            [
                "ServerSelected",
                "TeacherSelected",
                "StudentSelected",
                "DataReady",
                "Trained",
                "Evaluated",
                "Ready",
            ]
        )
    ],
    "server": {"node": "n", "gpu": {"model": "L4"}},
    "cost": {"teacherTokens": 5, "spentUsd": 1.0, "estimateUsd": 2.0, "gpuHours": 0.1},
    "training": {"steps": 10, "durationSeconds": 5.0},
    "evaluation": {"accuracy": 0.5},
    "endpoint": {"ready": True, "tokensPerSecond": 12.0},
}
TRAINING: dict[str, Any] = {
    "phase": "Training",
    "stage": "Train",
    "conditions": [
        {
            "type": "DataReady",
            "status": "True",
            "reason": "R",
            "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ],
}


def exported() -> dict[str, set[str]]:
    """Every metric name the operator exports -> the label names its samples carry."""
    collector = JobMetrics()
    collector.set_active(True)
    meta = {
        "namespace": "ns",
        "name": "a",
        "uid": "u1",
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    collector.observe({"metadata": meta, "spec": {"requirements": {"budget": 10}}}, SERVING)
    collector.observe({"metadata": {**meta, "name": "b", "uid": "u2"}}, TRAINING)
    metrics.DECISION_SECONDS.labels(decision="server").observe(0.001)
    metrics.RECONCILE_SECONDS.observe(0.01)
    metrics.RECONCILE_ERRORS.labels(kind="ApiException").inc(0)
    found: dict[str, set[str]] = {}
    families = [*collector.collect(), *(f for f in REGISTRY.collect() if f.name.startswith("stratos_"))]
    for family in families:
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def test_every_metric_the_module_names_is_exported() -> None:
    names = set(exported())
    for name in (*JOB_METRIC_NAMES, *OPERATOR_METRIC_NAMES):
        assert name in names or f"{name}_count" in names, name


def check_expression(where: str, expr: str, known: dict[str, set[str]]) -> set[str]:
    """Parses ``expr`` and checks its metrics and labels; returns the labels it may group on."""
    used = usage(expr)
    assert used.metrics, f"{where}: reads no metric: {expr}"
    unknown = used.metrics - set(known)
    assert not unknown, f"{where}: {sorted(unknown)} are not exported by the operator"
    available = set().union(*(known[m] for m in used.metrics))
    for metric, labels in used.labels.items():
        assert labels <= known[metric], f"{where}: {metric} has no label {sorted(labels - known[metric])}"
    assert used.grouping <= available | TARGET_LABELS, (
        f"{where}: groups on {sorted(used.grouping - available)}"
    )
    return used.grouping | available


# --- PrometheusRule --------------------------------------------------------------------------------


def test_prometheus_rule_only_when_enabled() -> None:
    assert not of_kind(render(), "PrometheusRule")
    rule = one(render({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}}), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"


def test_every_alert_parses_and_reads_only_what_the_operator_exports() -> None:
    known = exported()
    rule = one(render(SCENARIOS["everything"]), "PrometheusRule")
    names = []
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for alert in group["rules"]:
            names.append(alert["alert"])
            where = f"alert {alert['alert']}"
            output = check_expression(where, alert["expr"], known)
            assert DURATION.match(alert["for"]), where
            assert alert["labels"]["severity"] in ("warning", "critical"), where
            assert alert["labels"]["team"] == "ml-platform", where  # additionalAlertLabels
            assert set(alert["annotations"]) == {"summary", "description"}, where
            # $labels.X in the text must be a label the alert's series carry.
            for text in alert["annotations"].values():
                for label in re.findall(r"\$labels\.([a-zA-Z_]+)", text):
                    assert label in output, f"{where}: annotation uses $labels.{label}"
    assert len(names) == len(set(names))
    assert {
        "StratosDistillationJobFailed",
        "StratosDistillationJobStageStuck",
        "StratosDistillationJobBudgetNearlySpent",
        "StratosOperatorReconcileErrors",
    } <= set(names)


def test_alert_thresholds_come_from_values() -> None:
    values = {"prometheusRule": {"enabled": True, "stuckStageSeconds": 7200, "budgetRatio": 0.75}}
    exprs = dict(rule_expressions(one(render(values), "PrometheusRule")))
    assert exprs["StratosDistillationJobStageStuck"].endswith("> 7200")
    assert exprs["StratosDistillationJobBudgetNearlySpent"].rstrip().endswith(">= 0.75")


@pytest.mark.parametrize("bad", [{"budgetRatio": 1.5}, {"stuckStageSeconds": 10}, {"unknown": 1}])
def test_rule_values_are_validated(bad: dict[str, Any], tmp_path: Any) -> None:

    values = tmp_path / "values.yaml"
    values.write_text(json.dumps({"prometheusRule": {"enabled": True, **bad}}))
    assert helm("template", RELEASE, str(CHART), "-f", str(values), check=False).returncode != 0


def test_service_monitor_keeps_the_jobs_namespace_label() -> None:
    monitor = one(render({"serviceMonitor": {"enabled": True}}), "ServiceMonitor")
    assert [e["honorLabels"] for e in monitor["spec"]["endpoints"]] == [True]


# --- Grafana dashboard -----------------------------------------------------------------------------


def test_dashboard_schema() -> None:
    board = dashboard()
    assert board["uid"] == "stratos-distillationjobs" and board["title"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel[
            "title"
        ]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        assert panel["type"] in ("row", "timeseries", "stat", "bargauge", "table", "state-timeline"), panel[
            "type"
        ]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]


def test_dashboard_queries_parse_and_read_only_what_the_operator_exports() -> None:
    known = exported()
    board = dashboard()
    defined = {f"${v['name']}" for v in board["templating"]["list"]} | {"$__rate_interval"}
    count = 0
    for where, expr in dashboard_expressions(board):
        check_expression(where, expr, known)
        assert set(re.findall(r"\$[a-zA-Z_]+", expr)) <= defined, where
        count += 1
    assert count >= 15
    # label_values(…, label): the label must be one the metric carries.
    for variable in board["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            label = variable["query"]["query"].rsplit(",", 1)[1].strip(" )")
            assert label in known["stratos_distillationjob_info"], variable["name"]


def test_dashboard_configmap_carries_the_json_for_the_grafana_sidecar() -> None:
    assert not [c for c in of_kind(render(), "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    objects = render(
        {
            "grafanaDashboard": {
                "enabled": True,
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "ML"},
            }
        }
    )
    (configmap,) = of_kind(objects, "ConfigMap")
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert json.loads(configmap["data"]["stratos-distillationjobs.json"]) == dashboard()
