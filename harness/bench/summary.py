"""Per-cell summaries of the result store: the finished runs' accuracies (fractions) beside the cell.

Units: every record holds accuracies as fractions in [0, 1] (in-memory and streamed cells alike);
percent appears only when printing. A record outside [0, 1] is refused rather than printed.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bench.cells import Cell, expand
from harness.bench.schema import Published, TableSpec
from harness.bench.store import ResultStore
from harness.errors import FormatError


@dataclass(frozen=True)
class CellSummary:
    cell: Cell
    accuracies: tuple[float, ...]  # fractions
    expected_runs: int
    protocol_text: str
    seconds: float

    @property
    def n(self) -> int:
        return len(self.accuracies)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def std(self) -> float | None:
        if not self.accuracies:
            return None
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    @property
    def published(self) -> Published | None:
        return self.cell.published

    @property
    def diff(self) -> float | None:
        """Ours minus the paper's, in percentage points."""
        if self.mean is None or self.published is None:
            return None
        return 100 * self.mean - self.published.value


def summarize(spec: TableSpec, results: str | Path, scale: str = "full") -> list[CellSummary]:
    store = ResultStore(results)
    by_cell: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in store.records(spec.name):
        bad = [a for a in rec.get("accuracies", []) if not 0.0 <= float(a) <= 1.0]
        if bad:
            raise FormatError(f"{results}: record {rec.get('unit', '?')} of cell {rec['cell']} holds accuracies "
                              f"{bad} outside [0, 1]; records hold fractions (percent only when printing)")
        by_cell[rec["cell"]].append(rec)
    out = []
    for cell in expand(spec, scale):
        recs = sorted(by_cell.get(cell.key, []), key=lambda r: r["run"])
        accs = tuple(a for r in recs for a in r["accuracies"])
        proto = next((r.get("protocol_text", "") for r in recs), "")
        secs = sum(r.get("timings", {}).get("seconds", 0.0) for r in recs)
        out.append(CellSummary(cell, accs, len(cell.units()), proto, secs))
    return out


def fmt_acc(s: CellSummary) -> str:
    if s.mean is None:
        return "–"
    partial = f" ({s.n}/{s.expected_runs})" if s.n < s.expected_runs else ""
    return f"{100 * s.mean:.2f} ± {100 * s.std:.2f}{partial}"
