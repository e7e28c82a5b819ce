"""Lock files shared by processes and hosts: ``O_CREAT|O_EXCL`` files holding ``{"pid", "host"}``.

One mechanism serves the result store (one lock per work unit) and the shared artifacts (a dynamics
run, a cached condensed set): whoever creates the file owns it until :meth:`Lock.release`.

- A lock whose owner is a dead pid on this host is stale and is reclaimed, under a short second
  lock (``<name>.reclaim``) so two reclaimers cannot remove each other's fresh lock.
- Locks of other hosts are never broken automatically (their pids cannot be checked from here).
- :func:`hold` waits for a held lock by sleeping and retrying; it never reads the clock to decide
  anything, so it waits as long as the owner lives and takes over as soon as it is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process on this host (a zombie counts as dead: it holds nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_owner(path: str | os.PathLike) -> dict[str, Any] | None:
    """The owner a lock file names, or None (missing, being written, or unreadable)."""
    try:
        owner = json.loads(Path(path).read_text() or "null")
    except (OSError, json.JSONDecodeError):
        return None
    return owner if isinstance(owner, dict) else None


def is_stale(owner: dict[str, Any] | None, *, host: str = HOST, all_hosts: bool = False) -> bool:
    """A lock is stale when its owner is a dead pid on ``host`` (or, with ``all_hosts``, on any other host)."""
    if owner is None:
        return False  # being written right now, or foreign: leave it
    if owner.get("host") != host:
        return all_hosts
    try:
        return not pid_alive(int(owner.get("pid", -1)))
    except (TypeError, ValueError):
        return False


def describe_owner(owner: dict[str, Any] | None) -> str:
    if owner is None:
        return "an unknown owner"
    where = "this host" if owner.get("host") == HOST else f"host {owner.get('host')}"
    return f"pid {owner.get('pid')} on {where}"


@dataclass(frozen=True)
class Lock:
    path: Path
    owner: dict[str, Any]

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if read_owner(self.path) == self.owner:
                self.path.unlink()


def _create(path: Path, owner: dict[str, Any]) -> bool:
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


def reclaim(path: Path, seen: dict[str, Any] | None, *, host: str = HOST, all_hosts: bool = False) -> None:
    """Remove the lock at ``path`` if it still names ``seen`` and ``seen`` is stale."""
    guard = path.with_name(path.name + ".reclaim")
    me = {"pid": os.getpid(), "host": host}
    if not _create(guard, me):
        if is_stale(read_owner(guard), host=host):  # a reclaimer died mid-way
            with contextlib.suppress(FileNotFoundError):
                guard.unlink()
        return
    try:
        if read_owner(path) == seen and is_stale(seen, host=host, all_hosts=all_hosts):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        with contextlib.suppress(FileNotFoundError):
            guard.unlink()


def try_lock(path: str | os.PathLike, *, pid: int | None = None, host: str = HOST) -> Lock | None:
    """Take the lock at ``path``: a :class:`Lock`, or None while another live process holds it."""
    p = Path(path)
    owner = {"pid": pid or os.getpid(), "host": host}
    for _ in range(3):
        if _create(p, owner):
            return Lock(p, owner)
        current = read_owner(p)
        if not is_stale(current, host=host):
            return None
        reclaim(p, current, host=host)
    return None


@contextlib.contextmanager
def hold(path: str | os.PathLike, *, poll_s: float = 0.5,
         on_wait: Callable[[dict[str, Any] | None], None] | None = None) -> Iterator[Lock]:
    """Hold the lock at ``path`` for the ``with`` block, waiting (sleep and retry) while another process has it.

    ``on_wait(owner)`` is called once, when the first attempt finds the lock held. Taking a lock this
    process already holds raises RuntimeError instead of waiting for ever.
    """
    p = Path(path)
    lock = try_lock(p)
    told = False
    while lock is None:
        owner = read_owner(p)
        if owner is not None and owner.get("host") == HOST and owner.get("pid") == os.getpid():
            raise RuntimeError(f"{p}: lock already held by this process")
        if not told and on_wait is not None:
            on_wait(owner)
            told = True
        time.sleep(poll_s)
        lock = try_lock(p)
    try:
        yield lock
    finally:
        lock.release()
