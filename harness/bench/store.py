"""The result store: one JSON record per finished work unit, claimed with atomic lock files.

Layout under ``--results DIR``::

    records/<table>/<cell key>/<unit key>.json   written atomically (temp + rename), never rewritten
    locks/<unit key>.lock                        O_CREAT|O_EXCL; holds {"pid", "host"} of the owner
    logs/<table>/<cell key>/run<r>-<unit key>.log
    artifacts/<kind>/<config hash>/              cached intermediates (dynamics, condensed sets)

Locks are :mod:`harness.locks` files: a lock whose owner is a dead pid on this host is stale and is
reclaimed (under a short second lock, so two reclaimers cannot remove each other's fresh lock). Locks
of other hosts are never broken automatically (``break_stale_locks(all_hosts=True)`` does it by hand).
The shared artifacts under ``artifacts/`` are locked the same way while they are being made.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import FormatError
from harness.io import atomic_write_json
from harness.locks import HOST, Lock, is_stale, pid_alive, read_owner, reclaim, try_lock

_read_owner = read_owner  # older name

__all__ = ["Lock", "ResultStore", "is_eexist", "pid_alive"]


class ResultStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.host = HOST

    # --- paths --------------------------------------------------------------------------------
    def record_path(self, table: str, cell_key: str, unit_key: str) -> Path:
        return self.root / "records" / table / cell_key / f"{unit_key}.json"

    def lock_path(self, unit_key: str) -> Path:
        return self.root / "locks" / f"{unit_key}.lock"

    def log_path(self, table: str, cell_key: str, run: int, unit_key: str) -> Path:
        return self.root / "logs" / table / cell_key / f"run{run}-{unit_key}.log"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    # --- records ------------------------------------------------------------------------------
    def has(self, table: str, cell_key: str, unit_key: str) -> bool:
        return self.record_path(table, cell_key, unit_key).is_file()

    def write(self, table: str, cell_key: str, unit_key: str, record: dict[str, Any]) -> Path:
        path = self.record_path(table, cell_key, unit_key)
        if path.exists():
            raise FileExistsError(f"{path}: record already written; a work unit is recorded once")
        return atomic_write_json(path, record)

    def read(self, path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise FormatError(f"{path}: unreadable result record ({e})") from None

    def records(self, table: str) -> Iterator[dict[str, Any]]:
        base = self.root / "records" / table
        if base.is_dir():
            for p in sorted(base.glob("*/*.json")):
                yield self.read(p)

    # --- locks (harness.locks) -----------------------------------------------------------------
    def is_stale(self, owner: dict[str, Any] | None, *, all_hosts: bool = False) -> bool:
        return is_stale(owner, host=self.host, all_hosts=all_hosts)

    def claim(self, unit_key: str, pid: int | None = None) -> Lock | None:
        """Claim a work unit: a Lock, or None when another live process holds it."""
        return try_lock(self.lock_path(unit_key), pid=pid, host=self.host)

    def _reclaim(self, path: Path, seen: dict[str, Any] | None, all_hosts: bool = False) -> None:
        reclaim(path, seen, host=self.host, all_hosts=all_hosts)

    def locks(self) -> list[tuple[str, dict[str, Any] | None]]:
        d = self.root / "locks"
        return [(p.stem, read_owner(p)) for p in sorted(d.glob("*.lock"))] if d.is_dir() else []

    def break_stale_locks(self, *, all_hosts: bool = False) -> int:
        n = 0
        for key, owner in self.locks():
            if self.is_stale(owner, all_hosts=all_hosts):
                self._reclaim(self.lock_path(key), owner, all_hosts=all_hosts)
                n += 1
        return n


def is_eexist(e: OSError) -> bool:
    return e.errno == errno.EEXIST
