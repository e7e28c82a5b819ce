"""Cell kinds: ``evaluate``, ``coreset``, ``condense``, ``shrink`` (one module each), behind one interface.

``create_cell_kind(name)`` gives the kind; ``kind.config(merged_cell_config, where)`` its typed, validated
config; ``kind.run(config, runs, ctx)`` the results of a cell's pending runs. See :mod:`.base`.
"""

from harness.bench.kinds import condense, coreset, evaluate, shrink  # noqa: F401  (registration)
from harness.bench.kinds.base import (
    CELL_KINDS,
    CellConfig,
    CellKind,
    KindResult,
    Run,
    RunContext,
    create_cell_kind,
    list_cell_kinds,
    register_cell_kind,
    trains_together,
)

__all__ = ["CELL_KINDS", "CellConfig", "CellKind", "KindResult", "Run", "RunContext", "create_cell_kind",
           "list_cell_kinds", "register_cell_kind", "trains_together"]
