"""Sub-commands for published condensed sets: ``import``, ``inspect`` and ``shrink`` (YOCO).

``ddbench import FORMAT PATH --dataset cifar10 --out DIR [--experiment K] [--factor F]`` reads a
published file with the named loader and writes the canonical form (``images.safetensors`` +
``meta.json``); a file with several experiments and no ``--experiment`` writes ``DIR/exp<k>``.
``ddbench inspect DIR`` prints what a set is. ``ddbench shrink DIR --to-ipc K --rule yoco --out
DIR2`` runs :func:`condensed.shrink.shrink`. Thin: parse, call the library, print.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from adapters.loaders import LOADERS, list_loaders
from condensed import load_condensed
from condensed.set import is_condensed_dir, write_set_files
from condensed.shrink import resolve_rule, shrink
from harness.cli.common import (
    check_set_geometry,
    check_set_out,
    common_data_args,
    engine_args,
    engine_options,
    make_progress,
    nonneg_int,
    parse_params,
    positive_int,
    progress_args,
    seed_int,
)
from harness.engine.protocol import create_protocol
from harness.errors import ConfigError
from harness.io import atomic_dir
from harness.validate import check_values


def add_commands(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("import", help="read a published condensed set and write it in ddbench's format")
    p.add_argument("format", help=f"one of {', '.join(list_loaders())}")
    p.add_argument("path", help="the published file or folder (hfhub: the repository id)")
    p.add_argument("--dataset", default=None, help="the dataset it condenses (default: from the file name)")
    p.add_argument("--out", required=True, help="output directory (new or empty; an earlier import with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a condensed set already at --out")
    p.add_argument("--experiment", type=nonneg_int, default=None, help="VICO: only this experiment")
    p.add_argument("--factor", type=positive_int, default=None,
                   help="IDC: multi-formation factor (default: folder tag)")
    p.add_argument("--allow-pad", action="store_true", help="IDC: accept a factor that does not divide the image")
    p.add_argument("--zca", action="store_true", help="MTT/KRR: the images are ZCA-whitened (needed when the "
                   "folder or file name does not say; --option zca=false says they are not)")
    p.add_argument("--method", default=None, help="method name to record (default: the loader's)")
    p.add_argument("--option", action="append", help="other loader options, key=value")
    p.set_defaults(func=cmd_import)

    q = sub.add_parser("inspect", help="describe a condensed-set directory")
    q.add_argument("dir")
    q.add_argument("--json", action="store_true", help="print meta.json-like JSON instead of text")
    q.set_defaults(func=cmd_inspect)

    s = sub.add_parser("shrink", help="shrink a condensed set to a smaller IPC (YOCO and pruning baselines)")
    s.add_argument("dir", help="source condensed-set directory")
    s.add_argument("--to-ipc", type=positive_int, required=True)
    s.add_argument("--rule", default="yoco", help="recipe: yoco, random, random_balance, el2n_hard, ccs, ...")
    s.add_argument("--out", required=True, help="output directory (new or empty; never the source)")
    s.add_argument("--overwrite", action="store_true", help="replace a condensed set already at --out")
    s.add_argument("--runs-dynamics", type=positive_int, default=None,
                   help="dynamics runs averaged (default 1; YOCO uses 3)")
    s.add_argument("--stop-epoch", type=positive_int, default=None,
                   help="LBPE stop epoch (default: per source method)")
    s.add_argument("--topk", type=positive_int, default=None, help="LBPE top-K epochs (default: per source method)")
    s.add_argument("--epochs", type=positive_int, default=None,
                   help="dynamics training epochs (default: the protocol's)")
    s.add_argument("--protocol", default="yoco", help="dynamics training protocol")
    s.add_argument("--seed", type=seed_int, default=0)
    engine_args(s)
    progress_args(s)
    common_data_args(s)
    s.set_defaults(func=cmd_shrink)


def _loader_options(args: argparse.Namespace) -> dict:
    opts = parse_params(args.option, "--option")
    for key in ("experiment", "factor", "method"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    if args.allow_pad:
        opts["allow_pad"] = True
    if args.zca:
        opts["zca"] = True
    if args.dataset:
        opts["dataset"] = args.dataset
    return opts


def cmd_import(args: argparse.Namespace) -> int:
    import inspect as pyinspect


    loader = LOADERS.get(args.format)
    opts = _loader_options(args)
    accepted = set(pyinspect.signature(loader).parameters)
    bad = sorted(set(opts) - accepted)
    if bad:
        raise ConfigError(f"format {args.format!r} takes no option(s) {bad} (it takes {sorted(accepted - {'path'})})")
    opts = check_values(loader, opts, "--option", exclude=("path",))  # value types (e.g. resize=true)
    path = args.path if args.format == "hfhub" else Path(args.path)
    out = check_set_out(args.out, overwrite=args.overwrite, sources=[] if args.format == "hfhub" else [path],
                        is_ours=_is_import_output)
    sets = loader(path, **opts)
    names = [""] if len(sets) == 1 else [f"exp{cs.provenance.get('experiment', i)}" for i, cs in enumerate(sets)]
    with atomic_dir(out) as tmp:  # all experiments appear at once, or none
        for cs, name in zip(sets, names, strict=True):
            write_set_files(cs, tmp / name)
    for cs, name in zip(sets, names, strict=True):
        d = Path(args.out) / name if name else Path(args.out)
        print(f"wrote {d}: {cs.method} {cs.dataset} IPC {cs.ipc} factor {cs.factor} space {cs.space} "
              f"{cs.label_kind} labels, {len(cs.labels)} images, sha256 {cs.checksum()[:12]}")
    return 0


def _is_import_output(d: Path) -> bool:
    """A condensed set, or a folder of ``exp<k>`` condensed sets (an earlier multi-experiment import)."""

    if is_condensed_dir(d):
        return True
    names = os.listdir(d)
    return bool(names) and all(re.fullmatch(r"exp\d+", n) and is_condensed_dir(d / n) for n in names)


def describe(cs) -> str:
    """The text ``ddbench inspect`` prints."""
    lines = [f"method      {cs.method}", f"dataset     {cs.dataset} ({cs.num_classes} classes)",
             f"IPC         {cs.ipc} stored" + (f" ({cs.ipc * cs.factor ** 2} decoded)" if cs.factor > 1 else ""),
             f"factor      {cs.factor}", f"space       {cs.space}" + (f" (zca {cs.zca})" if cs.zca else ""),
             f"labels      {cs.label_kind}", f"images      {len(cs.labels)} x {tuple(cs.images.shape[1:])}",
             f"per class   {cs.class_counts()}", f"checksum    {cs.checksum()}",
             "provenance  " + json.dumps(cs.provenance, sort_keys=True, default=str)[:2000]]
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:

    cs = load_condensed(args.dir)
    check_set_geometry(cs, args.dir)  # a set that cannot match its dataset is not shown as valid
    print(json.dumps(cs.meta(), indent=2, sort_keys=True) if args.json else describe(cs))
    return 0


def cmd_shrink(args: argparse.Namespace) -> int:
    out = check_set_out(args.out, overwrite=args.overwrite, sources=[args.dir])
    _check_shrink_options(args)
    src = load_condensed(args.dir)
    check_set_geometry(src, args.dir)
    runs_dynamics = args.runs_dynamics if args.runs_dynamics is not None else 1
    small = shrink(src, args.to_ipc, rule=args.rule, runs_dynamics=runs_dynamics, stop_epoch=args.stop_epoch,
                   topk=args.topk, epochs=args.epochs, protocol=args.protocol, seed=args.seed, device=args.device,
                   data_root=args.data_root, cache_dir=args.cache_dir, options=engine_options(args),
                   progress=make_progress(args))
    small.save(out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {small.method} IPC {src.ipc}x{src.factor ** 2} -> {small.ipc} "
          f"rule {args.rule}, per class {small.class_counts()}")
    return 0


def _check_shrink_options(args: argparse.Namespace) -> None:
    """Refuse options the rule would not use (they would be silently ignored) and unknown names, before work."""
    recipe = resolve_rule(args.rule)
    create_protocol(args.protocol, "cifar10")
    trains = recipe.score is not None or recipe.rule == "kmeans"
    given = {"--runs-dynamics": args.runs_dynamics, "--epochs": args.epochs, "--stop-epoch": args.stop_epoch,
             "--topk": args.topk, "--path": None if args.path == "auto" else args.path,
             "--precision": args.precision, "--compile": args.compile, "--exact": args.exact or None}
    if args.path == "ensemble" and trains:
        raise ConfigError("--path ensemble: shrink's dynamics runs record one model at a time (sequential); "
                          "use --path auto or sequential")
    for opt, val in given.items():
        if val is None:
            continue
        if not trains:
            raise ConfigError(f"{opt} {val}: rule {args.rule} trains no model (no training dynamics); drop {opt}")
        if opt in ("--stop-epoch", "--topk") and recipe.score != "lbpe":
            raise ConfigError(f"{opt} {val}: only the LBPE rules (yoco) use it, not rule {args.rule} "
                              f"(score {recipe.score})")
