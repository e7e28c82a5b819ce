"""The resumable table runner: spec -> cells -> work units -> executor -> result store.

Each work unit is claimed with a lock file, re-checked against the store, run with a log file of
its own, and recorded atomically, so a re-run skips finished units, a killed run loses at most the
units in flight, and two runners on one results directory never record the same unit twice.
Durations are measured with ``time.perf_counter`` for the record only; no decision reads a clock.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bench.cells import Cell, RunContext, WorkUnit, expand, get_cell_kind, resolve_protocol
from harness.bench.spec import TableSpec, load_spec
from harness.bench.store import ResultStore
from harness.errors import ConfigError
from harness.io import git_revision, versions

RECORD_FORMAT = "ddbench.bench.record/1"


@dataclass(frozen=True)
class RunOptions:
    """Everything about *where* units run; nothing here enters a hash."""

    results: str
    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class UnitOutcome:
    unit_key: str
    status: str  # done | skipped | busy | failed
    message: str = ""


def _unit_logger(path: Path) -> tuple[logging.Logger, logging.Handler]:
    path.parent.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"ddbench.bench.unit.{path.stem}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    return log, handler


def run_unit(unit: WorkUnit, opts: RunOptions) -> UnitOutcome:
    """Claim, run and record one work unit (safe to call from any process or host)."""
    store = ResultStore(opts.results)
    cell = unit.cell
    if store.has(cell.table, cell.key, unit.key):
        return UnitOutcome(unit.key, "skipped")
    lock = store.claim(unit.key)
    if lock is None:
        return UnitOutcome(unit.key, "busy", "claimed by another runner")
    try:
        if store.has(cell.table, cell.key, unit.key):  # finished between our check and our claim
            return UnitOutcome(unit.key, "skipped")
        log, handler = _unit_logger(store.log_path(cell.table, cell.key, unit.run, unit.key))
        try:
            cfg = unit.run_config
            log.info("cell %s (%s | %s | %s) run %d seed %d scale %s", cell.key, cell.dataset, cell.row,
                     cell.column, unit.run, unit.seed, cell.scale)
            log.info("config %s", cfg)
            ctx = RunContext(device=opts.device, data_root=opts.data_root,
                             cache_dir=opts.cache_dir or str(store.root / "cache"),
                             artifacts_dir=str(store.artifacts), log=log)
            t0 = time.perf_counter()
            try:
                result = get_cell_kind(cfg["kind"])(cfg, ctx)
            except Exception as e:
                log.exception("failed: %s", e)
                return UnitOutcome(unit.key, "failed", f"{type(e).__name__}: {e}")
            seconds = time.perf_counter() - t0
            log.info("accuracies %s in %.1f s", list(result.accuracies), seconds)
            protocol_text = result.protocol_text or _describe(cfg)
            record = {
                "format": RECORD_FORMAT, "table": cell.table, "cell": cell.key, "unit": unit.key,
                "dataset": cell.dataset, "row": cell.row, "column": cell.column, "role": cell.role,
                "x": cell.x, "scale": cell.scale, "run": unit.run, "seed": unit.seed, "config": cfg,
                "protocol": result.protocol, "protocol_text": protocol_text,
                "accuracies": list(result.accuracies), "extra": result.extra,
                "timings": {"seconds": round(seconds, 3)}, "device": opts.device,
                "versions": versions(), "git_revision": git_revision(),
            }
            store.write(cell.table, cell.key, unit.key, record)
            return UnitOutcome(unit.key, "done")
        finally:
            log.removeHandler(handler)
            handler.close()
    finally:
        lock.release()


def _describe(cfg: dict[str, Any]) -> str:
    try:
        return resolve_protocol(cfg).describe()
    except Exception:  # the protocol text is informative only
        return str(cfg.get("protocol", ""))


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
    from harness.bench.executors import create_executor

    spec = spec if isinstance(spec, TableSpec) else load_spec(spec)
    store = ResultStore(opts.results)
    if store.root.exists() and not store.root.is_dir():
        raise ConfigError(f"{store.root}: exists and is not a folder (a results folder is expected)")
    store.root.mkdir(parents=True, exist_ok=True)
    store.break_stale_locks()  # dead runners' locks on this host (even of units they recorded before dying)
    units = table_units(spec, scale)
    todo = [u for u in units if not store.has(u.cell.table, u.cell.key, u.key)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=f"{spec.name} [{scale}]",
                   unit="run", dynamic_ncols=True)
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
        for out in ex.run(todo, opts):
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
            for out in ex.run(free, opts) if free else ():
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
    from harness.locks import read_owner

    path = store.lock_path(unit_key)
    return path.exists() and not store.is_stale(read_owner(path))


def cells_of(spec: TableSpec, scale: str) -> list[Cell]:
    return expand(spec, scale)
