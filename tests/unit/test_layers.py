"""The package's layers, checked on its import graph (read with ``ast``, nothing is imported).

Every module belongs to the layer of the most specific pattern below that names it. An import may point
to its own group or to a lower layer, never up, and never sideways to another group of the same layer;
and no modules import each other in a loop, counting imports inside functions too. docs/architecture.md
draws the same layers: change both together.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "operator"

#: Top to bottom. Each layer is a tuple of groups; groups of one layer do not import each other.
PIPELINE = ("stratos.pipeline", "stratos.pipeline.*")
LAYERS: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("stratos.cli", "stratos.kubectl"),),
    # The three runtimes: the kopf operator and its Kubernetes executor, the local runner, the stage programs.
    (
        ("stratos.controller", "stratos.controller.*"),
        ("stratos.local", "stratos.local.*"),
        ("stratos.workloads*",),
    ),
    (PIPELINE, ("stratos.synthesis*", "stratos.training*")),
    (("stratos.kube*",), ("stratos.tasks*", "stratos.data*")),
    (("stratos.serving*",),),
    (("stratos.contracts*",), ("stratos.decide*",)),
    (("stratos.llm*",), ("stratos.api*", "stratos.catalog*")),
    (("stratos", "stratos.logs"),),
)


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((PACKAGE_ROOT / "stratos").rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the stratos modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    return {module: set(targets) for module, targets in _import_graph().items()}


@cache
def _import_graph() -> dict[str, frozenset[str]]:
    modules = _modules()
    graph: dict[str, frozenset[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "stratos")
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                if source.split(".")[0] != "stratos":
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if sub in modules else source)
        graph[name] = frozenset(t for t in targets if t != name)
    return graph


def place(module: str) -> tuple[int, int]:
    """(layer, group) of the most specific pattern naming ``module``."""
    best: tuple[int, int, int] | None = None
    for layer, groups in enumerate(LAYERS):
        for group, patterns in enumerate(groups):
            for pattern in patterns:
                if fnmatchcase(module, pattern) and (best is None or len(pattern) > best[0]):
                    best = (len(pattern), layer, group)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best[1], best[2]


def wrong_arrows(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for source, targets in sorted(graph.items()):
        here = place(source)
        for target in sorted(targets):
            there = place(target)
            if there[0] < here[0] or (there[0] == here[0] and there[1] != here[1]):
                wrong.append(f"{source} -> {target}")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        place(module)


def test_no_import_points_up_or_sideways() -> None:
    assert wrong_arrows(import_graph()) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_arrow() -> None:
    """The checks themselves: the old machine <-> stage registration cycle, and kube importing the machine."""
    graph = import_graph()
    assert "stratos.pipeline.stage_server" in graph["stratos.pipeline.machine"]
    graph["stratos.pipeline.stage_server"] = graph["stratos.pipeline.stage_server"] | {
        "stratos.pipeline.machine"
    }
    pair = {"stratos.pipeline.machine", "stratos.pipeline.stage_server"}
    assert any(pair <= set(cycle) for cycle in cycles(graph))
    graph["stratos.kube.children"] = graph["stratos.kube.children"] | {"stratos.pipeline.machine"}
    assert "stratos.kube.children -> stratos.pipeline.machine" in wrong_arrows(graph)
    with pytest.raises(LookupError):
        place("elsewhere.module")


#: What the stage machine must run without: it is shared by the operator, ``stratos run`` and ``plan``.
RUNTIME_ONLY = ("kopf", "kubernetes", "kubernetes_asyncio", "aiohttp")


def third_party_imports(module: str) -> set[str]:
    """Top-level names of the packages ``module`` imports outside stratos (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(_modules()[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found - {"stratos"}


def test_the_pipeline_package_imports_no_kubernetes_runtime() -> None:
    pipeline = [m for m in _modules() if place(m) == place("stratos.pipeline.machine")]
    assert "stratos.pipeline.machine" in pipeline and "stratos.pipeline.stage_distill" in pipeline
    assert {m: sorted(third_party_imports(m) & set(RUNTIME_ONLY)) for m in pipeline} == {
        m: [] for m in pipeline
    }
    # ...and the check sees one where it is (the operator's handlers are kopf's).
    assert "kopf" in third_party_imports("stratos.controller.operator")
