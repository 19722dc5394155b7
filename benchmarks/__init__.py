"""Benchmarks (issue #9): scripts that print a table and write a JSON file under benchmarks/results/.

Run them from the repository root as modules, e.g. ``.venv/bin/python -m benchmarks.selection_speed``;
benchmarks/README.md says what each measures and shows the latest figures. They are not tests: nothing
here asserts a timing.
"""
