"""The operator: the kopf process that drives the stage machine (``stratos.pipeline``) against the API server.

``operator`` (the kopf handlers), ``executor`` (stage runs as Jobs, the serving endpoint), ``watchcache``
(the operator's list-then-watch cache) with ``nodewatch`` (Nodes) and ``childwatch`` (stage Jobs, pods,
serving Deployments), ``rawapi`` (plain JSON requests), ``announce`` (events), ``kueue``, ``metrics``,
``faults``. Builders of the child objects are in ``stratos.kube`` and ``stratos.serving``; decisions in
``stratos.decide``.
"""
