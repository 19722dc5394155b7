"""The Argo CD health check, run by a real Lua 5.1 interpreter on each kind of status, and the
argocd-cm patch that installs it. (tests/integration runs it on the statuses the operator writes.)"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from support.health import (
    ARGO_TO_FLUX,
    ARGOCD_HEALTH_LUA,
    FLUX_HEALTH_CHECK,
    REPO_ROOT,
    argocd_health,
    flux_health,
)

PATCH = REPO_ROOT / "charts" / "stratos" / "files" / "argocd-cm-patch.yaml"


def dj(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "stratos.io/v1alpha1",
        "kind": "DistillationJob",
        "metadata": {"name": "m", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = {"observedGeneration": 3, **status}
    return obj


def cond(ctype: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": ctype, "status": status, "reason": reason, "message": message}


CASES = [
    ("no status yet", None, "Progressing", "Waiting for the operator"),
    (
        "at work",
        {"phase": "Training", "conditions": [cond("Ready", "Unknown", "Training", "at stage Train")]},
        "Progressing",
        "Training: at stage Train",
    ),
    (
        "waiting with a message",
        {"phase": "SelectingServer", "message": "no node fits"},
        "Progressing",
        "SelectingServer: no node fits",
    ),
    (
        "serving",
        {"phase": "Serving", "conditions": [cond("Ready", "True", "Serving", "m is served at http://x")]},
        "Healthy",
        "Serving: m is served at http://x",
    ),
    (
        "endpoint down",
        {"phase": "Serving", "conditions": [cond("Ready", "False", "EndpointNotReady", "0 of 1 ready")]},
        "Degraded",
        "EndpointNotReady: 0 of 1 ready",
    ),
    (
        "succeeded",
        {"phase": "Succeeded", "conditions": [cond("Ready", "True", "Completed", "reached 90%")]},
        "Healthy",
        "Completed: reached 90%",
    ),
    (
        "failed",
        {
            "phase": "Failed",
            "conditions": [
                cond("Failed", "True", "BudgetExceeded", "spent 2 USD"),
                cond("Ready", "False", "X"),
            ],
        },
        "Degraded",
        "BudgetExceeded: spent 2 USD",
    ),
    (
        "suspended",
        {
            "phase": "Suspended",
            "conditions": [cond("Suspended", "True", "Suspended", "spec.suspend is true")],
        },
        "Suspended",
        "Suspended: spec.suspend is true",
    ),
]


@pytest.mark.parametrize(("status", "health", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health_of_each_kind_of_status(status: dict[str, Any] | None, health: str, message: str) -> None:
    result = argocd_health(dj(status))
    assert result["status"] == health
    assert result["message"].startswith(message)
    # Flux's healthCheckExprs (CEL) reach the same verdict.
    assert flux_health(dj(status)) == ARGO_TO_FLUX[health]


@pytest.mark.parametrize("phase", ["Serving", "Failed", "Succeeded", "Suspended"])
def test_a_generation_the_operator_has_not_seen_is_progressing_whatever_the_phase(phase: str) -> None:
    result = argocd_health(
        dj({"phase": phase, "conditions": [cond("Ready", "True", "Serving")]}, generation=4)
    )
    assert result == {"status": "Progressing", "message": "Waiting for the operator to act on generation 4"}
    assert flux_health(dj({"phase": phase}, generation=4)) == "InProgress"


def test_the_argocd_cm_patch_carries_the_script_verbatim() -> None:
    patch = yaml.safe_load(PATCH.read_text())
    assert patch == {
        "data": {"resource.customizations.health.stratos.io_DistillationJob": ARGOCD_HEALTH_LUA.read_text()}
    }


def test_the_readme_shows_the_flux_expressions_that_are_tested() -> None:
    readme = (REPO_ROOT / "charts" / "stratos" / "README.md").read_text()
    entry = "".join(
        line for line in FLUX_HEALTH_CHECK.read_text().splitlines(True) if not line.startswith("#")
    )
    shown = "\n".join("    " + line if line else "" for line in entry.rstrip("\n").split("\n"))
    assert shown in readme, (
        "charts/stratos/README.md must show files/flux-health-check.yaml under healthCheckExprs"
    )
