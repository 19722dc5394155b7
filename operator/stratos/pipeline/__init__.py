"""The stage machine: kopf-free, shared by the operator, ``stratos run`` and ``stratos plan``.

``machine`` holds ``reconcile`` and the ordered step table; ``context`` what a step sees (the spec, the
typed status, the clock) and the ``Executor`` protocol a runtime implements (the Kubernetes executor in
``stratos.controller``, the local one in ``stratos.local``); one ``stage_*`` module per pipeline step;
``stages`` the stage vocabulary; ``conditions`` the condition types; ``status_patch`` the merge patch of
a status. Nothing here talks to an API server or imports kopf; ``tests/unit/test_layers.py`` keeps it so.
"""
