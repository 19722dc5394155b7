"""``stratos run``: the stage machine on one machine, local processes instead of Jobs.

``runner`` loops ``reconcile`` with a status kept in a file, ``executor`` starts each stage program as a
subprocess (same config and result files as in a pod) and the serving engine on localhost, ``teacher``
serves a programmatic teacher for the bundled example, ``summary`` and ``plot`` print the outcome.
"""
