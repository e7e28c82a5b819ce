"""The ``ddbench`` command: parses arguments, calls the library, prints. No logic lives here.

One module per command group, each with ``add_commands(subparsers)`` registering handlers with
``parser.set_defaults(func=...)``: :mod:`~harness.cli.info` (datasets, models, protocols, recipes),
:mod:`~harness.cli.evaluate`, :mod:`~harness.cli.quickstart`, :mod:`~harness.cli.pruning` (dynamics, score,
select, coreset), :mod:`~harness.cli.condense`, :mod:`~harness.cli.sets` (import, inspect, shrink) and
:mod:`~harness.cli.table`. Shared helpers are in :mod:`harness.cli.common`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import typing
from collections.abc import Sequence

from harness.cli import condense, evaluate, info, pruning, quickstart, sets, table
from harness.errors import DDBenchError
from harness.registry import UnknownNameError

COMMAND_GROUPS = (evaluate, quickstart, info, pruning, sets, condense, table)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (``ddbench CMD: error: ...``), exit 2."""

    def error(self, message: str) -> typing.NoReturn:
        message = " ".join(message.split())  # a value holding a newline must not break the one line
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ddbench", description="dataset distillation and data pruning benchmarks: "
                                    "condense, shrink, coreset, evaluate, tables")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (2: bad input, printed as one line on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad option (2, one line already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()
        return rc
    except (DDBenchError, UnknownNameError) as e:
        msg = " ".join(str(e).split())  # one line, even for messages that carry a command
        print(f"ddbench {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ddbench inspect DIR | head`: the reader left; stop quietly
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        print(f"ddbench {args.command}: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass




if __name__ == "__main__":
    raise SystemExit(main())
