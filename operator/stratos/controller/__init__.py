"""The operator: the stage machine and the kopf process that drives it against the API server.

Two layers live here, and ``tests/unit/test_layers.py`` keeps them apart:

- the stage machine, kopf-free and shared with ``stratos run`` and ``stratos plan``: ``machine``
  (``reconcile`` and the ordered step table), ``context`` (what a step sees, the ``Executor`` protocol),
  one ``stage_*`` module per pipeline step, ``stages`` (the vocabulary), ``conditions``, ``status_patch``;
- the Kubernetes runtime above it: ``operator`` (kopf handlers), ``executor`` (stage runs as Jobs, the
  serving endpoint), ``watchcache`` (the operator's list-then-watch cache) with ``nodewatch`` (Nodes) and
  ``childwatch`` (stage Jobs, pods, serving Deployments), ``announce`` (events), ``kueue``, ``metrics``,
  ``faults``.

Builders of the child objects are in ``stratos.kube`` and ``stratos.serving``; decisions in
``stratos.decide``.
"""
