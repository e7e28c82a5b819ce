"""The ``ddbench`` command: parses arguments, calls the library, prints. No logic lives here.

Sub-commands come from modules listed in ``COMMAND_MODULES``; each has
``add_commands(subparsers)`` and registers handlers with ``parser.set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.errors import DDBenchError
from harness.registry import UnknownNameError

COMMAND_MODULES: tuple[str, ...] = ("harness.commands", "harness.bench.commands", "harness.pruning.commands",
                                    "adapters.loaders.commands", "adapters.condense.commands")


def common_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="dataset root (default: $DDBENCH_DATA)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing datasets")
    p.add_argument("--cache-dir", default=None, help="cache decoded datasets here (default: $DDBENCH_CACHE)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1 ...)")


def parse_params(items: Sequence[str] | None) -> dict[str, object]:
    """``key=value`` pairs; values are parsed as JSON when they can be (numbers, lists, true/false)."""
    out: dict[str, object] = {}
    for item in items or ():
        if "=" not in item:
            raise DDBenchError(f"--param {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddbench", description="dataset distillation and data pruning benchmarks: "
                                    "condense, shrink, coreset, evaluate, tables")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (DDBenchError, UnknownNameError) as e:
        print(f"ddbench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddbench {args.command}: interrupted", file=sys.stderr)
        return 130


def write_json_out(path: str | None, obj: object) -> None:
    if path:
        from harness.io import atomic_write_json

        atomic_write_json(Path(path), obj)
        print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
