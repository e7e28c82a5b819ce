"""Running the pending runs of one cell: claim each unit's lock, run the cell's kind once for all of
them, record one result per unit as each finishes.

A :class:`CellJob` is the pending work units of one cell. :func:`run_job` claims every unit with a lock
file (a unit another live process holds comes back ``busy``; one recorded meanwhile ``skipped``), builds
the kind's typed config and hands the kind all claimed runs at once, so runs that share a trained set
train together (:mod:`harness.bench.kinds.base`). Each result is written atomically as one record per
unit, its lock released right after, so a re-run skips finished units, a killed run loses at most the
units in flight, and two runners on one results directory never record the same unit twice. Durations
are measured with ``time.perf_counter`` for the record only; no decision reads a clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.bench.cells import Cell, WorkUnit
from harness.bench.kinds import Run, RunContext, create_cell_kind
from harness.bench.store import ResultStore
from harness.engine import EngineOptions
from harness.io import git_revision, versions
from harness.locks import Lock

RECORD_FORMAT = "ddbench.bench.record/1"


@dataclass(frozen=True)
class RunOptions:
    """Everything about *where* and *how* units run; nothing here enters a hash (the engine options are
    written into each record)."""

    results: str
    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)


@dataclass(frozen=True)
class UnitOutcome:
    unit_key: str
    status: str  # done | skipped | busy | failed
    message: str = ""


@dataclass(frozen=True)
class CellJob:
    """The pending units of one cell, run together."""

    cell: Cell
    units: tuple[WorkUnit, ...]


def cell_jobs(units: Iterable[WorkUnit]) -> list[CellJob]:
    """``units`` grouped by cell (table order kept)."""
    by_cell: dict[str, list[WorkUnit]] = {}
    cells: dict[str, Cell] = {}
    for u in units:
        by_cell.setdefault(u.cell.key, []).append(u)
        cells.setdefault(u.cell.key, u.cell)
    return [CellJob(cells[k], tuple(us)) for k, us in by_cell.items()]


def _job_logger(store: ResultStore, units: Sequence[WorkUnit]) -> tuple[logging.Logger, list[logging.Handler]]:
    """One logger writing to each unit's log file (every unit's log holds the whole job's lines)."""
    log = logging.getLogger(f"ddbench.bench.unit.{units[0].key}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handlers: list[logging.Handler] = []
    for u in units:
        path = store.log_path(u.cell.table, u.cell.key, u.run, u.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        h = logging.FileHandler(path, mode="a")
        h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        log.addHandler(h)
        handlers.append(h)
    return log, handlers


def _record(unit: WorkUnit, result: Any, seconds: float, opts: RunOptions) -> dict[str, Any]:
    cell = unit.cell
    return {
        "format": RECORD_FORMAT, "table": cell.table, "cell": cell.key, "unit": unit.key,
        "dataset": cell.dataset, "row": cell.row, "column": cell.column, "role": cell.role,
        "x": cell.x, "scale": cell.scale, "run": unit.run, "seed": unit.seed, "experiment": unit.experiment,
        "config": unit.run_config, "protocol": result.protocol, "protocol_text": result.protocol_text,
        "accuracies": list(result.accuracies), "extra": result.extra,
        "engine": result.engine or opts.engine.as_dict(),
        "timings": {"seconds": round(seconds, 3), "trained_together": result.together},
        "device": opts.device, "versions": versions(), "git_revision": git_revision(),
    }


def run_job(job: CellJob, opts: RunOptions) -> list[UnitOutcome]:
    """Claim, run and record the pending units of one cell (safe to call from any process or host)."""
    store = ResultStore(opts.results)
    cell = job.cell
    out: dict[str, UnitOutcome] = {}
    claimed: dict[str, tuple[WorkUnit, Lock]] = {}
    for u in job.units:
        if store.has(cell.table, cell.key, u.key):
            out[u.key] = UnitOutcome(u.key, "skipped")
            continue
        lock = store.claim(u.key)
        if lock is None:
            out[u.key] = UnitOutcome(u.key, "busy", "claimed by another runner")
        elif store.has(cell.table, cell.key, u.key):  # finished between our check and our claim
            lock.release()
            out[u.key] = UnitOutcome(u.key, "skipped")
        else:
            claimed[u.key] = (u, lock)
    if claimed:
        try:
            out.update(_run_claimed(cell, [u for u, _ in claimed.values()], store, opts, claimed))
        finally:
            for _, lock in claimed.values():
                lock.release()  # no-op for the units already released
    return [out[u.key] for u in job.units]


def _run_claimed(cell: Cell, units: list[WorkUnit], store: ResultStore, opts: RunOptions,
                 locks: dict[str, tuple[WorkUnit, Lock]]) -> dict[str, UnitOutcome]:
    log, handlers = _job_logger(store, units)
    by_run = {u.run: u for u in units}
    out: dict[str, UnitOutcome] = {}
    try:
        log.info("cell %s (%s | %s | %s) scale %s: runs %s seeds %s", cell.key, cell.dataset, cell.row, cell.column,
                 cell.scale, [u.run for u in units], [u.seed for u in units])
        log.info("config %s; engine %s", cell.config, opts.engine.as_dict())
        ctx = RunContext(device=opts.device, data_root=opts.data_root,
                         cache_dir=opts.cache_dir or str(store.root / "cache"), artifacts_dir=str(store.artifacts),
                         options=opts.engine, log=log)
        t0 = time.perf_counter()
        try:
            kind = create_cell_kind(cell.config.get("kind", "evaluate"))
            config = kind.config(cell.config)
            for run, result in kind.run(config, [Run(u.run, u.seed, u.experiment) for u in units], ctx):
                unit = by_run[run.run]
                now = time.perf_counter()
                log.info("run %d seed %d: accuracies %s in %.1f s", unit.run, unit.seed, list(result.accuracies),
                         now - t0)
                store.write(cell.table, cell.key, unit.key, _record(unit, result, now - t0, opts))
                locks[unit.key][1].release()
                out[unit.key] = UnitOutcome(unit.key, "done")
                t0 = now
        except Exception as e:
            log.exception("failed: %s", e)
            for u in units:
                out.setdefault(u.key, UnitOutcome(u.key, "failed", f"{type(e).__name__}: {e}"))
        for u in units:  # a kind that yields fewer results than runs is a bug: say so, do not record
            out.setdefault(u.key, UnitOutcome(u.key, "failed", "the cell kind returned no result for this run"))
        return out
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()


def run_unit(unit: WorkUnit, opts: RunOptions) -> UnitOutcome:
    """Claim, run and record one work unit."""
    return run_job(CellJob(unit.cell, (unit,)), opts)[0]
