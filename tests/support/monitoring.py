"""The PromQL in the chart's PrometheusRule and Grafana dashboard, parsed (promql-parser, the Rust
PromQL parser) into the metric names and label names it uses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "charts" / "stratos" / "files" / "grafana-dashboard.json"
# Grafana's own variables, as a query would see them once Grafana substituted them.
GRAFANA_BUILTINS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
LABEL_VALUES = re.compile(r"^label_values\((?P<query>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


@dataclass
class Usage:
    """What one expression reads: metric names, and per metric the label names it matches or groups on."""

    metrics: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)
    grouping: set[str] = field(default_factory=set)


def parse(expr: str) -> Any:
    """The parsed expression (raises ValueError naming the problem when it is not PromQL)."""
    for variable, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(variable, value)
    try:
        return promql_parser.parse(expr)
    except Exception as err:
        raise ValueError(f"not PromQL: {expr!r}: {err}") from err


def usage(expr: str) -> Usage:
    found = Usage()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            if name:
                found.metrics.add(name)
                found.labels.setdefault(name, set()).update(
                    m.name for m in node.matchers.matchers if m.name != "__name__"
                )
        modifier = getattr(node, "modifier", None)
        if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
            found.grouping.update(str(label) for label in modifier.labels or ())
        if isinstance(node, promql_parser.BinaryExpr) and modifier is not None and modifier.matching:
            found.grouping.update(str(label) for label in modifier.matching.labels or ())
        return True

    promql_parser.walk(parse(expr), visit)
    return found


def rule_expressions(prometheus_rule: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(alert name, expression) of every rule of a rendered PrometheusRule."""
    for group in prometheus_rule["spec"]["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def dashboard_expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every label_values() variable query."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = LABEL_VALUES.match(query["query"])
            assert match, f"variable {variable['name']}: {query['query']!r} is not label_values(query, label)"
            yield f"variable {variable['name']}", match.group("query")


def referenced_metrics() -> set[str]:
    """Every metric name the dashboard's queries read (the rules need a render: see test_chart_monitoring)."""
    return set().union(*(usage(expr).metrics for _, expr in dashboard_expressions(dashboard())))
