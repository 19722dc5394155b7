"""The stage programs, one module per stage: ``python -m stratos.workloads.<stage> --config --result``.

Each parses its config (a model from ``stratos.contracts``), does the work with the parts in
``stratos.synthesis``, ``stratos.training``, ``stratos.tasks`` and ``stratos.llm``, and returns its
result model; ``common.run_stage`` writes it (or the failure) in the stage contract's format.
"""
