"""The resumable table runner: spec -> cells -> pending units -> executor -> result store.

Each cell's pending units go to the executor as one job (:mod:`harness.bench.work`): each unit is
claimed with a lock file, re-checked against the store, and recorded atomically as its run finishes, so
a re-run skips finished units, a killed run loses at most the units in flight, and two runners on one
results directory never record the same unit twice. Runs of a cell that share a trained set train
together when the engine options allow (``--path ensemble``, or ``auto`` on a GPU).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from harness.bench.cells import Cell, WorkUnit, expand
from harness.bench.executors import create_executor
from harness.bench.spec import TableSpec, load_spec
from harness.bench.store import ResultStore
from harness.bench.work import RECORD_FORMAT, CellJob, RunOptions, UnitOutcome, cell_jobs, run_job, run_unit
from harness.errors import ConfigError
from harness.locks import read_owner

__all__ = ["RECORD_FORMAT", "CellJob", "RunOptions", "TableStatus", "UnitOutcome", "cells_of", "run_job",
           "run_table", "run_unit", "table_status", "table_units"]


@dataclass(frozen=True)
class TableStatus:
    total: int
    done: int
    running: int  # claimed by a live process (or one on another host, which cannot be checked from here)
    pending: int  # neither done nor claimed; includes the units of ``stale`` locks
    stale: int = 0  # locks left by dead processes on this host (reclaimed by the next run)

    def __str__(self) -> str:
        text = f"{self.done}/{self.total} runs done, {self.running} claimed, {self.pending} pending"
        if self.stale:
            text += (f" ({self.stale} of them locked by a dead process; the next run takes them over, "
                     "--break-stale-locks removes the locks)")
        return text


def table_units(spec: TableSpec, scale: str) -> list[WorkUnit]:
    return [u for c in expand(spec, scale) for u in c.units()]


def table_status(spec: TableSpec, results: str | os.PathLike, scale: str = "full") -> TableStatus:
    store = ResultStore(results)
    units = table_units(spec, scale)
    locks = store.locks()
    live = {k for k, owner in locks if not store.is_stale(owner)}  # a dead pid's lock claims nothing
    dead = {k for k, owner in locks if store.is_stale(owner)}
    finished = {u.key for u in units if store.has(u.cell.table, u.cell.key, u.key)}
    running = sum(u.key in live and u.key not in finished for u in units)
    stale = sum(u.key in dead and u.key not in finished for u in units)
    return TableStatus(len(units), len(finished), running, len(units) - len(finished) - running, stale)


def run_table(spec: TableSpec | str | os.PathLike, opts: RunOptions, *, scale: str = "full",
              executor: str = "local", executor_options: dict[str, Any] | None = None,
              progress: bool = True, on_outcome: Callable[[UnitOutcome], None] | None = None,
              wait: bool = False, poll_s: float = 2.0) -> list[UnitOutcome]:
    """Run every unfinished work unit of ``spec`` under ``scale``; returns each unit's outcome (one per unit).

    A unit another live process holds comes back ``busy``. With ``wait`` the runner then sleeps and
    retries those units (``poll_s`` between rounds; no clock is read) until each is recorded by its
    holder, or taken over and run here when the holder dies.
    """
    spec = spec if isinstance(spec, TableSpec) else load_spec(spec)
    store = ResultStore(opts.results)
    if store.root.exists() and not store.root.is_dir():
        raise ConfigError(f"{store.root}: exists and is not a folder (a results folder is expected)")
    store.root.mkdir(parents=True, exist_ok=True)
    store.break_stale_locks()  # dead runners' locks on this host (even of units they recorded before dying)
    units = table_units(spec, scale)
    todo = [u for u in units if not store.has(u.cell.table, u.cell.key, u.key)]
    bar = (tqdm(total=len(units), initial=len(units) - len(todo), desc=f"{spec.name} [{scale}]", unit="run",
                dynamic_ncols=True) if progress else None)
    final: dict[str, UnitOutcome] = {}
    ex = create_executor(executor, **(executor_options or {}))

    def settle(out: UnitOutcome) -> None:
        final[out.unit_key] = out
        if out.status == "busy":
            return
        if bar is not None and out.status in ("done", "skipped"):
            bar.update(1)
        if bar is not None and out.status == "failed":
            bar.write(f"failed {out.unit_key}: {out.message}")
        if on_outcome is not None:
            on_outcome(out)

    try:
        for out in ex.run(cell_jobs(todo), opts):
            settle(out)
        busy = [u for u in todo if final[u.key].status == "busy"]
        while busy and wait:
            # watch the holders here (no job is submitted while they live), resubmit what they release
            if bar is not None:
                bar.set_postfix_str(f"waiting for {len(busy)} runs held elsewhere")
            time.sleep(poll_s)
            free = []
            for u in busy:
                if store.has(u.cell.table, u.cell.key, u.key):
                    settle(UnitOutcome(u.key, "skipped", "recorded by another runner"))
                elif not _held(store, u.key):
                    free.append(u)
            for out in ex.run(cell_jobs(free), opts) if free else ():
                settle(out)
            busy = [u for u in busy if final[u.key].status == "busy"]
    finally:
        if bar is not None:
            bar.close()
    for out in final.values():
        if out.status == "busy" and on_outcome is not None:
            on_outcome(out)
    return list(final.values())


def _held(store: ResultStore, unit_key: str) -> bool:
    """Whether a live process (or one on another host) holds the unit's lock."""
    path = store.lock_path(unit_key)
    return path.exists() and not store.is_stale(read_owner(path))


def cells_of(spec: TableSpec, scale: str) -> list[Cell]:
    return expand(spec, scale)


