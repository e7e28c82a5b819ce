"""Atomic writes, output checks, leftovers of killed writes, and run metadata. Nothing here reads the clock.

Every file or folder ddbench writes is first built under a temporary name next to its target, then
renamed into place, so a reader sees the old version or the new one, never half of one:

- a file ``NAME`` is written as ``.NAME.ddtmp-<host>-<pid>-<random>.tmp``;
- a folder ``NAME`` as ``.NAME.ddtmp-<host>-<pid>-<random>/``; an existing folder is swapped with it
  in one atomic ``renameat2(RENAME_EXCHANGE)`` where the filesystem allows it, else moved aside to
  ``.NAME.ddold-<host>-<pid>-<random>/`` for the instant between two renames.

``<host>`` is an 8-hex-digit tag of the host name and ``<pid>`` the writer's process id, so the next
write of the same target (:func:`clean_leftovers`) removes exactly the leftovers of killed writers on
this host (and puts a previous version back if a kill landed between the two renames); it never
touches another name, a live writer's temporary, or another host's.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import ConfigError, FormatError
from harness.locks import HOST, pid_alive

log = logging.getLogger("ddbench.io")

HOST_TAG = hashlib.sha1(HOST.encode()).hexdigest()[:8]
_LEFTOVER = re.compile(r"(?P<kind>tmp|old)-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[a-z0-9_]{8}(?:\.tmp)?")
_LEGACY = re.compile(r"[a-z0-9_]{8}(?:\.tmp)?|old")  # ``.NAME.XXXXXXXX[.tmp]`` / ``.NAME.old`` of older versions


def _prefix(name: str, kind: str = "tmp") -> str:
    return f".{name}.dd{kind}-{HOST_TAG}-{os.getpid()}-"


def _abs(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


def _umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it races with threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- leftovers of killed writes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Leftover:
    """A temporary that a writer of ``target`` left next to it."""

    path: Path
    kind: str  # tmp (a new version being built) | old (a previous version moved aside) | legacy
    host_tag: str | None = None
    pid: int | None = None

    @property
    def dead(self) -> bool:
        """Its writer was on this host and is gone (so nobody will finish or remove it)."""
        return self.host_tag == HOST_TAG and self.pid is not None and not pid_alive(self.pid)


def find_leftovers(target: str | os.PathLike) -> list[Leftover]:
    """Temporaries of writes of ``target`` (ddbench's exact naming only), sorted by name."""
    t = _abs(target)
    head = f".{t.name}."
    try:
        names = sorted(n for n in os.listdir(t.parent) if n.startswith(head))
    except OSError:
        return []
    out = []
    for n in names:
        rest = n[len(head):]
        m = _LEFTOVER.fullmatch(rest[2:]) if rest.startswith("dd") else None
        if m:
            out.append(Leftover(t.parent / n, m["kind"], m["host"], int(m["pid"])))
        elif _LEGACY.fullmatch(rest):
            out.append(Leftover(t.parent / n, "legacy"))
    return out


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def clean_leftovers(target: str | os.PathLike) -> list[str]:
    """Remove the leftovers of killed writes of ``target``; returns one line per leftover found.

    Dead writers' temporaries (this host, pid gone) are removed. If a writer died between moving the
    previous version aside and moving the new one in (``target`` missing, a dead ``ddold`` present),
    the previous version is put back. Live writers' temporaries are left alone silently; other hosts'
    and older ddbench versions' (``.NAME.XXXXXXXX``, ``.NAME.old``) are left in place and reported.
    """
    t = _abs(target)
    notes: list[str] = []
    found = find_leftovers(t)
    olds = [x for x in found if x.kind == "old" and x.dead]
    if olds and not os.path.lexists(t):
        back = olds[-1]
        with contextlib.suppress(OSError):
            os.rename(back.path, t)
            notes.append(f"restored {t} from {back.path.name} (a write was killed between two renames)")
            found.remove(back)
    for x in found:
        if x.kind == "legacy":
            notes.append(f"left in place: {x.path} (looks like a killed write's leftover; remove it by hand)")
        elif x.dead:
            _remove(x.path)
            notes.append(f"removed {x.path} (left by a killed write, pid {x.pid})")
        elif x.host_tag != HOST_TAG:
            notes.append(f"left in place: {x.path} (written from another host, maybe still running)")
    for n in notes:
        log.info("%s", n)
    return notes


# --- atomic files and folders -----------------------------------------------------------------------
# --- the one config hash ------------------------------------------------------------------------------
def _jsonable(o: Any) -> Any:
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "as_dict"):
        return o.as_dict()
    raise TypeError(f"cannot hash a {type(o).__name__} in a config")


def stable_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, tuples as lists, floats as Python repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_jsonable)


def config_hash(obj: Any, n: int = 16) -> str:
    """The key of a config everywhere in ddbench (caches, artifacts, table cells): sha256 of
    :func:`stable_json`, first ``n`` hex digits. The same config always maps to the same key."""
    return hashlib.sha256(stable_json(obj).encode()).hexdigest()[:n]


def sha256_base64(data: bytes) -> str:
    """The base64 of the sha256 digest of ``data`` (as a Content-Security-Policy hash source wants it)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same directory, then rename over ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(p)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(p.name), suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets a normal file's mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move the finished folder ``src`` to ``dst``, replacing what is there in one atomic step where possible."""
    s, d = _abs(src), _abs(dst)
    if not os.path.lexists(d):
        os.rename(s, d)
    elif d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
        os.replace(s, d)  # POSIX: a folder may replace an empty folder
    elif _exchange(s, d):
        shutil.rmtree(s, ignore_errors=True)  # ``s`` now holds the previous version
    else:
        old = Path(tempfile.mkdtemp(prefix=_prefix(d.name, "old"), dir=d.parent))
        os.replace(d, old)
        os.replace(s, d)
        shutil.rmtree(old, ignore_errors=True)
    return d


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Build a folder in a fresh temporary next to ``target``; on success it replaces ``target`` atomically.

    On an exception nothing is left behind and ``target`` is untouched. The caller decides whether
    ``target`` may be replaced (see :func:`check_output_dir`).
    """
    t = _abs(target)
    t.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(t)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(t.name), dir=t.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; the result gets a normal folder's mode
        yield tmp
        replace_dir(tmp, t)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- output checks (before any work starts) ---------------------------------------------------------
def _where(option: str | None, shown: str) -> str:
    return f"{option} {shown}" if option else shown


def _check_writable(p: Path, where: str) -> None:
    """``p`` (a folder to write in) or its nearest existing ancestor must be a writable folder."""
    anc = p
    while not os.path.lexists(anc) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{where}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot write in {anc} (permission denied)")


def check_output_file(path: str | os.PathLike, option: str | None = "--out") -> Path:
    """A file output (``evaluate --out r.json``): not a folder, and its folder can be made and written."""
    p, where = _abs(path), _where(option, str(path))
    if p.is_dir():
        raise ConfigError(f"{where}: is a folder; expected a file name (e.g. {Path(path) / 'result.json'})")
    if os.path.lexists(p) and not p.is_file():
        raise ConfigError(f"{where}: exists and is not a regular file")
    _check_writable(p.parent, where)
    return p


def check_output_root(path: str | os.PathLike, option: str | None = "--results") -> Path:
    """A folder ddbench fills with its own layout (``--results``, ``--workdir``, reports): new or a folder."""
    p, where = _abs(path), _where(option, str(path))
    if os.path.lexists(p) and not p.is_dir():
        raise ConfigError(f"{where}: exists and is not a folder")
    _check_writable(p, where)
    return p


def holds_only(d: str | os.PathLike, names: Collection[str], fmt: str) -> bool:
    """``d`` holds nothing but ``names`` (among them ``meta.json``, declaring ``"format": fmt``)."""
    try:
        entries = set(os.listdir(d))
    except OSError:
        return False
    if "meta.json" not in entries or not entries <= set(names):
        return False
    try:
        read_meta_json(Path(d) / "meta.json", fmt)
    except (FormatError, OSError):
        return False
    return True


def check_output_dir(path: str | os.PathLike, *, what: str, is_ours: Callable[[Path], bool], overwrite: bool,
                     sources: Sequence[str | os.PathLike] = (), option: str | None = "--out",
                     flag: str = "--overwrite") -> Path:
    """A folder output that replaces what is there (a condensed set): returns its resolved path.

    Refused: the current folder; the source of the same command (or a folder holding it); anything
    that is not a folder; a non-empty folder that ``is_ours`` does not recognise (nothing but one of our
    outputs is ever replaced); and one of our outputs unless ``overwrite``.
    """
    shown = str(path)
    where = _where(option, shown)
    p = Path(path).resolve()
    if p == Path.cwd().resolve():
        raise ConfigError(f"{where}: is the current folder; name a new folder to write the {what} into")
    for s in sources:
        rs = Path(s).resolve()
        if p == rs or p in rs.parents:
            held = "" if p == rs else "a folder holding "
            raise ConfigError(f"{where}: is {held}the source {s} of this command; write to another folder")
    if os.path.lexists(p):
        if not p.is_dir():
            raise ConfigError(f"{where}: exists and is not a folder")
        entries = sorted(os.listdir(p))
        if entries and not is_ours(p):
            listing = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise ConfigError(f"{where}: folder holds other files ({listing}); write the {what} to a new or "
                              "empty folder")
        if entries and not overwrite:
            raise ConfigError(f"{where}: already holds a {what}; pass {flag} to replace it")
    _check_writable(p.parent, where)
    return p


def atomic_save_npy(path: str | os.PathLike, array: Any) -> Path:
    """``np.save`` to a temporary file in the same directory, then rename over ``path``."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_meta_json(path: str | os.PathLike, fmt: str) -> dict:
    """A ``meta.json`` that must parse and declare ``"format": fmt``; FormatError naming the file otherwise."""

    p = Path(path)
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise FormatError(f"{p}: format {found!r}, expected {fmt!r}")
    return meta


def git_revision(start: str | os.PathLike | None = None) -> str | None:
    here = Path(start or Path(__file__).resolve().parent)
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str]:
    import numpy
    import timm
    import torch
    import torchvision


    return {"ddbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": numpy.__version__}
