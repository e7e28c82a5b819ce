"""``ddbench table run|status|report SPEC --results DIR [--scale smoke] [--executor local|slurm]``
(``table report --html`` adds the self-contained HTML page).

``table run`` also takes the engine options ``--path`` / ``--precision`` / ``--compile``
(:class:`harness.engine.EngineOptions`): how runs execute, written into every record, never part of a
cell's key (the same cell computed faster is the same cell). Thin: parses arguments and calls
:mod:`harness.bench`. Also runnable on its own as ``python -m harness.cli.table table ...``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.bench.report import write_reports
from harness.bench.runner import RunOptions, run_table, table_status, table_units
from harness.bench.spec import load_spec
from harness.bench.store import ResultStore
from harness.cli.common import check_out_root, device_arg, engine_args, engine_options, positive_int
from harness.errors import ConfigError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="table spec (benchmarks/tables/*.yaml)")
    p.add_argument("--results", required=True, help="results directory (records, locks, logs, artifacts)")
    p.add_argument("--scale", default="full", help="named scale: full, smoke, or one defined in the spec")


def add_commands(sub: argparse._SubParsersAction) -> None:
    table = sub.add_parser("table", help="benchmark tables: run, status, report")
    tsub = table.add_subparsers(dest="table_command", metavar="ACTION")
    run = tsub.add_parser("run", help="run every unfinished cell of a table (resumable)")
    _common(run)
    run.add_argument("--executor", default="local", help="local | slurm")
    run.add_argument("--device", default="cpu", help="torch device for local runs (cpu, cuda)")
    run.add_argument("--workers", type=positive_int, default=None,
                     help="local: worker processes (default: one per GPU)")
    run.add_argument("--data-root", default=None, help="dataset root (default: $DDBENCH_DATA)")
    run.add_argument("--cache-dir", default=None, help="decoded-dataset cache (default: RESULTS/cache)")
    run.add_argument("--cluster", default=None, help="slurm executor: submitit cluster (slurm, local, debug)")
    run.add_argument("--partition", default=None, help="slurm partition")
    run.add_argument("--timeout-min", type=positive_int, default=240, help="slurm job time limit (minutes)")
    run.add_argument("--report", default=None, help="write reports to this folder when done")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--wait", action="store_true",
                     help="wait for runs other processes hold (default: exit 3 and say how many are left)")
    engine_args(run)
    run.set_defaults(func=cmd_run)
    st = tsub.add_parser("status", help="runs done / claimed / pending")
    _common(st)
    st.add_argument("--break-stale-locks", action="store_true", help="remove locks of dead pids on this host")
    st.set_defaults(func=cmd_status)
    rep = tsub.add_parser("report", help="Markdown, CSV, LaTeX and plots (and, with --html, one HTML page)")
    _common(rep)
    rep.add_argument("--out", default=None, help="output folder (default: RESULTS/reports)")
    rep.add_argument("--no-plots", action="store_true")
    rep.add_argument("--html", action="store_true",
                     help="also write NAME-SCALE.html: one self-contained page (grid, paper's numbers, plots, "
                          "provenance) that opens from disk offline")
    rep.set_defaults(func=cmd_report)
    table.set_defaults(func=lambda a: (table.print_help(), 2)[1])


def _check_results(args: argparse.Namespace, write: bool = False) -> None:
    """``--results`` must be a folder (or, for a run, one that can be made); a file is refused up front."""
    if write:
        check_out_root(args.results, "--results")
    elif Path(args.results).exists() and not Path(args.results).is_dir():
        raise ConfigError(f"--results {args.results}: exists and is not a folder (a results folder is expected)")


def cmd_run(args: argparse.Namespace) -> int:
    """Exit 0 when every run is recorded; 1 when a run failed; 3 when runs held by other processes are left."""
    _check_results(args, write=True)
    check_out_root(args.report, "--report")
    spec = load_spec(args.spec)
    opts = RunOptions(results=args.results, device=args.device, data_root=args.data_root, cache_dir=args.cache_dir,
                      engine=engine_options(args))
    if args.executor == "slurm":
        ex_opts = {"cluster": args.cluster, "partition": args.partition, "timeout_min": args.timeout_min}
    elif args.executor == "local":
        try:  # slurm jobs run elsewhere; a local run needs the device here
            device_arg(args.device)
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"--device: {e}") from None
        ex_opts = {"workers": args.workers}
    else:
        raise ConfigError(f"--executor {args.executor!r}: expected local or slurm")
    outcomes = run_table(spec, opts, scale=args.scale, executor=args.executor, executor_options=ex_opts,
                         progress=not args.no_progress, wait=args.wait)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to do"
    print(f"{spec.name} [{args.scale}]: {summary}")
    for o in outcomes:
        if o.status == "failed":
            print(f"  failed {o.unit_key}: {o.message}", file=sys.stderr)
    busy = {o.unit_key for o in outcomes if o.status == "busy"}
    if busy:
        cells = {u.cell.key for u in table_units(spec, args.scale) if u.key in busy}
        print(f"{spec.name} [{args.scale}]: {len(busy)} runs ({len(cells)} cells) still running elsewhere; "
              "the table is not complete (run again when they finish, or pass --wait)", file=sys.stderr)
    if args.report:
        for p in write_reports(spec, args.results, args.report, args.scale).values():
            print(f"wrote {p}")
    return 1 if counts.get("failed") else 3 if busy else 0


def cmd_status(args: argparse.Namespace) -> int:
    _check_results(args)
    spec = load_spec(args.spec)
    if args.break_stale_locks:
        print(f"removed {ResultStore(args.results).break_stale_locks()} stale locks")
    print(f"{spec.name} [{args.scale}]: {table_status(spec, args.results, args.scale)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _check_results(args)
    check_out_root(args.out, "--out")
    spec = load_spec(args.spec)
    out = args.out or f"{args.results}/reports"
    for p in write_reports(spec, args.results, out, args.scale, plots=not args.no_plots, html=args.html).values():
        print(f"wrote {p}")
    return 0
