"""The result store: one JSON record per finished work unit, claimed with atomic lock files.

Layout under ``--results DIR``::

    records/<table>/<cell key>/<unit key>.json   written atomically (temp + rename), never rewritten
    locks/<unit key>.lock                        O_CREAT|O_EXCL; holds {"pid", "host"} of the owner
    logs/<table>/<cell key>/run<r>-<unit key>.log
    artifacts/<kind>/<config hash>/              cached intermediates (dynamics, condensed sets)

A lock whose owner is a dead pid on this host is stale and is reclaimed (under a short second
lock, so two reclaimers cannot remove each other's fresh lock). Locks of other hosts are never
broken automatically (``break_stale_locks(all_hosts=True)`` does it by hand).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import FormatError
from harness.io import atomic_write_json


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead (it holds nothing)
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass(frozen=True)
class Lock:
    path: Path
    owner: dict[str, Any]

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if _read_owner(self.path) == self.owner:
                self.path.unlink()


def _read_owner(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, json.JSONDecodeError):
        return None


class ResultStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.host = socket.gethostname()

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

    # --- locks --------------------------------------------------------------------------------
    def _create(self, path: Path, owner: dict[str, Any]) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(owner))
            f.flush()
            os.fsync(f.fileno())
        return True

    def is_stale(self, owner: dict[str, Any] | None, *, all_hosts: bool = False) -> bool:
        if owner is None:
            return False  # being written right now, or foreign: leave it
        if owner.get("host") != self.host:
            return all_hosts
        return not pid_alive(int(owner.get("pid", -1)))

    def claim(self, unit_key: str, pid: int | None = None) -> Lock | None:
        """Claim a work unit: a Lock, or None when another live process holds it."""
        path = self.lock_path(unit_key)
        owner = {"pid": pid or os.getpid(), "host": self.host}
        for _ in range(3):
            if self._create(path, owner):
                return Lock(path, owner)
            current = _read_owner(path)
            if not self.is_stale(current):
                return None
            self._reclaim(path, current)
        return None

    def _reclaim(self, path: Path, seen: dict[str, Any] | None, all_hosts: bool = False) -> None:
        guard = path.with_suffix(".reclaim")
        me = {"pid": os.getpid(), "host": self.host}
        if not self._create(guard, me):
            g = _read_owner(guard)
            if self.is_stale(g):  # a reclaimer died mid-way
                with contextlib.suppress(FileNotFoundError):
                    guard.unlink()
            return
        try:
            if _read_owner(path) == seen and self.is_stale(seen, all_hosts=all_hosts):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        finally:
            with contextlib.suppress(FileNotFoundError):
                guard.unlink()

    def locks(self) -> list[tuple[str, dict[str, Any] | None]]:
        d = self.root / "locks"
        return [(p.stem, _read_owner(p)) for p in sorted(d.glob("*.lock"))] if d.is_dir() else []

    def break_stale_locks(self, *, all_hosts: bool = False) -> int:
        n = 0
        for key, owner in self.locks():
            if self.is_stale(owner, all_hosts=all_hosts):
                self._reclaim(self.lock_path(key), owner, all_hosts=all_hosts)
                n += 1
        return n


def is_eexist(e: OSError) -> bool:
    return e.errno == errno.EEXIST
