"""Pure decisions, each a function of facts: no Kubernetes, no network, no clock.

``nodes`` (node facts from Node objects), ``servers`` (the Pareto Front Grid server choice), ``joint``
(the joint node and student choice), ``teachers``, ``strategy``, ``students``, ``models`` (student
shape facts), ``estimate`` (time, memory and cost estimates), ``placement`` (from a spec to these functions'
parameters), ``endpoints`` (the teacher URL policy), ``evaluation`` (the evaluation's decode budget).
The README's "The decisions" states the rules they implement. (Two small exceptions read the
operator's environment or a local config file: the URL policy's settings and a model's config.json.)
"""
