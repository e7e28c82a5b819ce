"""What every ``ddbench`` command shares: typed option values, ``--param`` parsing, output checks.

Each command group lives in its own module of :mod:`harness.cli` and imports from here; nothing here
imports a command module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from condensed.set import is_condensed_dir
from harness.data import get_spec
from harness.engine.options import PATHS, PRECISION_CHOICES, EngineOptions
from harness.errors import ConfigError
from harness.io import atomic_write_json, check_output_dir, check_output_file, check_output_root, clean_leftovers
from harness.progress import Progress, create_progress
from harness.validate import check_values

# --- typed option values: argparse ``type=`` helpers ------------------------------------------------
# Every numeric option of every command uses one of these, so a bad value is refused by the parser
# (exit 2, one line naming the option) before any work starts, and an explicit value such as 0 is
# never mistaken for "not given" (handlers compare with ``is None``).
INT_MAX = 2**31 - 1  # seeds and counts pass through int32 in torch/numpy
_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_FLOAT_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", re.ASCII)


def int_in(lo: int | None = None, hi: int | None = INT_MAX, what: str | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi]."""
    desc = what or (f"an integer in [{lo}, {hi}]" if lo is not None else f"an integer <= {hi}")

    def parse(text: str) -> int:
        if not isinstance(text, str) or not _INT_TEXT.fullmatch(text):  # no '1_000', no '٣', no '0x10'
            raise argparse.ArgumentTypeError(f"expected {desc}, got {text!r}")
        v = int(text)
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"expected {desc}, got {text!r}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"expected {desc} (at most {hi}), got {text!r}")
        return v

    parse.__name__ = "integer"
    return parse


def float_in(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
             what: str | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval (ends open or closed, None = unbounded)."""
    if what is None:
        a = "(" if lo_open or lo is None else "["
        b = ")" if hi_open or hi is None else "]"
        what = f"a number in {a}{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}{b}"

    def parse(text: str) -> float:
        if not isinstance(text, str) or not _FLOAT_TEXT.fullmatch(text):  # plain decimals only: no nan, inf, '1_0'
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        v = float(text)
        bad = (not math.isfinite(v) or (lo is not None and (v <= lo if lo_open else v < lo))
               or (hi is not None and (v >= hi if hi_open else v > hi)))
        if bad:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    parse.__name__ = "number"
    return parse


positive_int = int_in(1, what="a positive integer")
nonneg_int = int_in(0, what="a non-negative integer")
seed_int = int_in(0, INT_MAX, what=f"a seed in [0, {INT_MAX}]")
positive_float = float_in(0, lo_open=True, what="a positive number")
fraction_open = float_in(0, 1, lo_open=True, hi_open=True)  # (0, 1)
keep_fraction = float_in(0, 1, lo_open=True)  # (0, 1]
prune_fraction = float_in(0, 1, hi_open=True)  # [0, 1)


def device_arg(text: str) -> str:
    """An argparse type: a torch device string that exists on this machine (cuda needs a visible GPU)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"expected a torch device (cpu, cuda, cuda:1, mps), got {text!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine "
                                             "(torch.cuda.is_available() is False); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine; use cpu")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda[:N] or mps, got {text!r}")
    return text


def common_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="dataset root (default: $DDBENCH_DATA)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    p.add_argument("--cache-dir", default=None, help="cache decoded datasets here (default: $DDBENCH_CACHE)")
    p.add_argument("--device", default="cpu", type=device_arg, help="torch device (cpu, cuda, cuda:1 ...)")


def _compile_arg(text: str) -> bool | str:
    t = text.strip().lower()
    if t == "auto":
        return "auto"
    if t in ("on", "true", "1", "yes"):
        return True
    if t in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto, on or off, got {text!r}")


def engine_args(p: argparse.ArgumentParser) -> None:
    """``--path`` / ``--precision`` / ``--compile`` / ``--exact``: how runs execute
    (:class:`harness.engine.EngineOptions`). The default is the fast path (bf16 where native, compile when the
    run pays for it); ``--exact`` is fp32, eager and sequential: the protocol's numbers bit for bit."""

    g = p.add_argument_group("engine (how runs execute, never what they compute)")
    g.add_argument("--path", default=None, choices=list(PATHS),
                   help="auto (default): vmap ensemble of the runs on CUDA, sequential on CPU; ensemble works on "
                        "CPU too")
    g.add_argument("--precision", default=None, choices=list(PRECISION_CHOICES),
                   help="auto (default): bf16 autocast where the device has native bf16, else the protocol's "
                        "(fp32); bf16 falls back to fp32 where not native")
    g.add_argument("--compile", default=None, type=_compile_arg, nargs="?", const=True, metavar="{auto,on,off}",
                   help="torch.compile the model: auto (default) when the run is long enough to pay for the "
                        "compile (measured break-even), on (also a bare --compile), off")
    g.add_argument("--exact", action="store_true",
                   help="fp32, eager, sequential: the protocol's numbers bit for bit (slower); not combinable with "
                        "--path/--precision/--compile")


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """The :class:`harness.engine.EngineOptions` of ``--path`` / ``--precision`` / ``--compile`` / ``--exact``."""

    given = {k: getattr(args, k, None) for k in ("path", "precision", "compile")}
    if getattr(args, "exact", False):
        clash = [f"--{k}" for k, v in given.items() if v is not None]
        if clash:
            raise ConfigError(f"--exact fixes the engine (fp32, eager, sequential); drop {', '.join(clash)}")
        return EngineOptions.exact()
    return EngineOptions(**{k: v for k, v in given.items() if v is not None})


def progress_args(p: argparse.ArgumentParser) -> None:
    """``--quiet`` / ``--progress``: the progress display of a long command (on stderr; stdout keeps the results)."""
    p.add_argument("--progress", default="auto", choices=["auto", "bar", "lines"],
                   help="auto (default): a bar per phase on a terminal, else one line per finished phase")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def make_progress(args: argparse.Namespace) -> Progress:
    """The :class:`harness.progress.Progress` of ``--progress`` / ``--quiet``."""
    return create_progress("quiet" if getattr(args, "quiet", False) else getattr(args, "progress", "auto"))


def parse_params(items: Sequence[str] | None, option: str = "--param") -> dict[str, object]:
    """``key=value`` pairs; values are parsed as JSON when they can be (numbers, lists, true/false).

    NaN/Infinity are refused (JSON would accept them); a key given twice is refused rather than
    silently keeping the last.
    """
    out: dict[str, object] = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        k = k.strip()
        if not sep or not k:
            raise ConfigError(f"{option} {item!r}: expected key=value")
        if k in out:
            raise ConfigError(f"{option} {k!r} given twice")
        try:
            out[k] = json.loads(v, parse_constant=_no_constant)
        except json.JSONDecodeError:
            out[k] = v
        except ValueError as e:
            raise ConfigError(f"{option} {item!r}: {e}") from None
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a finite number")


def checked_params(target: object, items: Sequence[str] | None, option: str = "--param", *,
                   exclude: tuple[str, ...] = ()) -> dict[str, object]:
    """``key=value`` pairs checked against a config dataclass or a function's keyword parameters
    (names, types, ranges: :func:`harness.validate.check_values`)."""

    return check_values(target, parse_params(items, option), option, exclude=exclude)


def check_set_geometry(cs: typing.Any, where: str) -> None:
    """Refuse a condensed set (a ``CondensedSet``) whose images do not have its dataset's channels and size."""

    spec = get_spec(cs.dataset)
    shape = tuple(cs.images.shape[1:])
    if shape != tuple(spec.geometry):
        raise ConfigError(f"{where}: images are {shape} (C, H, W), but its dataset {cs.dataset} "
                          f"is {tuple(spec.geometry)}; this set cannot be evaluated against {cs.dataset}")


def write_json_out(path: str | None, obj: object) -> None:
    if path:

        atomic_write_json(Path(path), obj)
        print(f"wrote {path}")


# --- outputs: checked before any work starts (harness.io) -------------------------------------------
def tell_leftovers(target: str | os.PathLike) -> None:
    """Clean the leftovers of killed writes next to ``target`` and say what was found (stderr)."""

    for note in clean_leftovers(target):
        print(f"ddbench: {note}", file=sys.stderr)


def check_out_file(path: str | None, option: str = "--out") -> None:
    """A file output (JSON, .npy): not a folder, its folder writable; leftovers next to it cleaned."""
    if path:

        tell_leftovers(check_output_file(path, option))


def check_out_root(path: str | None, option: str) -> None:
    """A folder ddbench fills with its own layout (results, workdir, reports): new or an existing folder."""
    if path:

        check_output_root(path, option)


def check_set_out(path: str, *, overwrite: bool, sources: Sequence[str | os.PathLike] = (),
                  is_ours: Callable[[Path], bool] | None = None, option: str = "--out") -> Path:
    """A condensed-set output: new, empty, or a condensed set replaced only with ``--overwrite``; never the
    command's own source, never a folder with other files. Returns the resolved path to write."""

    tell_leftovers(Path(path).resolve())  # first: it may put back a set a killed write had moved aside
    return check_output_dir(path, what="condensed set", is_ours=is_ours or is_condensed_dir, overwrite=overwrite,
                            sources=sources, option=option)

