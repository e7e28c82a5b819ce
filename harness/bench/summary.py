"""Per-cell summaries of the result store: the finished runs' accuracies (fractions) beside the cell,
and the layout helpers every report shares (the grid of a dataset, each row's ``follows``, the scale's
note, the fairness scores).

Units: every record holds accuracies as fractions in [0, 1] (in-memory and streamed cells alike);
percent appears only when printing. A record outside [0, 1] is refused rather than printed.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
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
    # the finished runs' records (provenance: seeds, engine, versions, git revision), sorted by run
    records: tuple[dict[str, Any], ...] = field(default=(), repr=False, compare=False)

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
        out.append(CellSummary(cell, accs, len(cell.units()), proto, secs, tuple(recs)))
    return out


def fmt_acc(s: CellSummary) -> str:
    if s.mean is None:
        return "–"
    partial = f" ({s.n}/{s.expected_runs})" if s.n < s.expected_runs else ""
    return f"{100 * s.mean:.2f} ± {100 * s.std:.2f}{partial}"


def lrs(acc_set: float, acc_random: float, acc_full: float, acc_hard: float, w: float = 0.5) -> float:
    """DD-Ranking-style label-robust score (w = 0.5) from fractions, in [0, 1] for IOR, HLR in [-1, 1]:

        IOR = acc(set) - acc(random real, same IPC);  HLR = acc(full data) - acc(set, hard labels)
        LRS = (exp(w * IOR - (1 - w) * HLR) - exp(-1)) / (exp(1) - exp(-1))
    """
    ior, hlr = acc_set - acc_random, acc_full - acc_hard
    return (math.exp(w * ior - (1 - w) * hlr) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def grid(summaries: list[CellSummary]) -> tuple[list[str], list[str], dict[tuple[str, str], CellSummary]]:
    """Row labels and column labels in table order, and (row, column) -> summary."""
    rows, cols, cells = [], [], {}
    for s in summaries:
        if s.cell.row not in rows:
            rows.append(s.cell.row)
        if s.cell.column not in cols:
            cols.append(s.cell.column)
        cells[(s.cell.row, s.cell.column)] = s
    return rows, cols, cells


def by_dataset(summaries: list[CellSummary]) -> dict[str, list[CellSummary]]:
    """Dataset -> its summaries (table order kept)."""
    out: dict[str, list[CellSummary]] = defaultdict(list)
    for s in summaries:
        out[s.cell.dataset].append(s)
    return dict(out)


def scale_note(spec: TableSpec, scale: str) -> str:
    """The scale's ``about`` line, else a generic warning for any scale but ``full``."""
    about = str(spec.scale(scale).get("about", "")).strip()
    if about:
        return about
    return ("scaled down: epochs, runs and data are reduced; numbers are not comparable with the paper's"
            if scale != "full" else "")


def follows_by_row(group: list[CellSummary]) -> dict[str, str]:
    """Row label -> the protocol it follows (the first non-empty text among its cells)."""
    out: dict[str, str] = {}
    for s in group:
        if s.cell.follows and not out.get(s.cell.row):
            out[s.cell.row] = s.cell.follows
    return out


@dataclass(frozen=True)
class FairnessScore:
    """IOR / HLR / LRS of one main cell (fractions; HLR and LRS need the spec's ``full_accuracy``)."""

    row: str
    column: str
    ior: float
    hlr: float | None
    lrs: float | None


def fairness_scores(spec: TableSpec, group: list[CellSummary]) -> list[FairnessScore]:
    """The scores of the main cells that have both fairness siblings with finished runs."""
    out = []
    full = spec.full_accuracy
    idx = {(s.cell.row, s.cell.column): s for s in group}
    for s in group:
        if s.cell.role != "main" or s.mean is None or "ipc" not in s.cell.config:
            continue
        rnd = idx.get((f"random real (IPC {s.cell.config['ipc']})", s.cell.column))
        hard = idx.get((f"{s.cell.row} [hard label]", s.cell.column))
        if rnd is None or hard is None or rnd.mean is None or hard.mean is None:
            continue
        ds_full = full.get(s.cell.dataset)
        hlr = (ds_full / 100 - hard.mean) if ds_full is not None else None
        score = lrs(s.mean, rnd.mean, ds_full / 100, hard.mean) if ds_full is not None else None
        out.append(FairnessScore(s.cell.row, s.cell.column, s.mean - rnd.mean, hlr, score))
    return out


FAIRNESS_NOTE = ("Fairness (fractions): IOR = acc(set) − acc(random real, same IPC); HLR = acc(full) − "
                 "acc(set, hard labels); LRS = (exp(0.5·IOR − 0.5·HLR) − e⁻¹)/(e − e⁻¹).")
