"""Benchmark tables: YAML specs -> cells -> executors -> result store -> reports and plots.

Library entry points (the ``ddbench table`` command is a thin layer over these):

- :func:`harness.bench.spec.load_spec` parses and validates a spec (errors carry YAML lines);
- :func:`harness.bench.cells.expand` lists its cells; ``register_cell_kind`` adds a kind;
- :func:`harness.bench.runner.run_table` runs what is not done yet (resumable, lock-claimed);
- :func:`harness.bench.report.write_reports` writes Markdown/CSV/LaTeX reports and plots.
"""

from harness.bench.cells import (
    Cell,
    KindResult,
    RunContext,
    WorkUnit,
    config_hash,
    expand,
    list_cell_kinds,
    register_cell_kind,
    stable_json,
)
from harness.bench.spec import TableSpec, load_spec, parse_spec

__all__ = ["Cell", "KindResult", "RunContext", "TableSpec", "WorkUnit", "config_hash", "expand",
           "list_cell_kinds", "load_spec", "parse_spec", "register_cell_kind", "stable_json"]
