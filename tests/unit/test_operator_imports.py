"""What the operator process imports, and when (checked in a fresh interpreter through ``sys.modules``).

A restarted operator first asks for the node list and loads the decision code while the API server
answers (``operator.configure``): importing the operator module (what ``kopf run -m`` does before any
handler) must not load the stage machine, and nothing the operator runs may load the stage programs'
libraries (torch, transformers, the OpenAI client), which only the worker image carries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
HEAVY = ("torch", "transformers", "openai", "datasets", "trl", "peft")


def loaded_after(code: str) -> set[str]:
    """The modules loaded after running ``code`` in a fresh interpreter."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(OPERATOR), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_operator_module_defers_the_decision_code_and_never_loads_the_stage_programs_libraries() -> None:
    at_import = loaded_after("import stratos.controller.operator")
    from stratos.controller.operator import DECISION_MODULES

    assert "stratos.controller.nodewatch" in at_import and "kopf" in at_import
    assert not at_import & set(DECISION_MODULES)
    assert "numpy" not in at_import  # the decision code's; loaded with it
    running = loaded_after(
        "import importlib, stratos.controller.operator as op\n"
        "for m in op.DECISION_MODULES: importlib.import_module(m)"
    )
    assert set(DECISION_MODULES) <= running
    assert not {m.split(".")[0] for m in running} & set(HEAVY)
