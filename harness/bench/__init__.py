"""Benchmark tables: YAML specs -> cells -> executors -> result store -> reports and plots.

Library entry points (the ``ddbench table`` command is a thin layer over these):

- :func:`harness.bench.spec.load_spec` parses and validates a spec (errors carry YAML lines);
- :func:`harness.bench.cells.expand` lists its cells and their work units;
- :mod:`harness.bench.kinds`: the cell kinds (``evaluate``, ``coreset``, ``condense``, ``shrink``), one module
  each, with typed configs; ``register_cell_kind`` / ``list_cell_kinds`` / ``create_cell_kind``;
- :func:`harness.bench.runner.run_table` runs what is not done yet (resumable, lock-claimed; a cell's
  pending runs go to its kind together, :mod:`harness.bench.work`);
- :func:`harness.bench.report.write_reports` writes Markdown/CSV/LaTeX reports and plots.
"""

from harness.bench.cells import Cell, WorkUnit, config_hash, expand, stable_json
from harness.bench.kinds import (
    CellKind,
    KindResult,
    Run,
    RunContext,
    create_cell_kind,
    list_cell_kinds,
    register_cell_kind,
)
from harness.bench.spec import TableSpec, load_spec, parse_spec

__all__ = ["Cell", "CellKind", "KindResult", "Run", "RunContext", "TableSpec", "WorkUnit", "config_hash",
           "create_cell_kind", "expand", "list_cell_kinds", "load_spec", "parse_spec", "register_cell_kind",
           "stable_json"]
