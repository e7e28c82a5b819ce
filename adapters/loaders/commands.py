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
from pathlib import Path

from harness.cli import common_data_args, parse_params
from harness.errors import ConfigError


def add_commands(sub: argparse._SubParsersAction) -> None:
    from adapters.loaders import list_loaders

    p = sub.add_parser("import", help="read a published condensed set and write it in ddbench's format")
    p.add_argument("format", help=f"one of {', '.join(list_loaders())}")
    p.add_argument("path", help="the published file or folder (hfhub: the repository id)")
    p.add_argument("--dataset", default=None, help="the dataset it condenses (default: from the file name)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--experiment", type=int, default=None, help="VICO: only this experiment")
    p.add_argument("--factor", type=int, default=None, help="IDC: multi-formation factor (default: folder tag)")
    p.add_argument("--allow-pad", action="store_true", help="IDC: accept a factor that does not divide the image")
    p.add_argument("--zca", action="store_true", help="MTT: the images are ZCA-whitened")
    p.add_argument("--method", default=None, help="method name to record (default: the loader's)")
    p.add_argument("--option", action="append", help="other loader options, key=value")
    p.set_defaults(func=cmd_import)

    q = sub.add_parser("inspect", help="describe a condensed-set directory")
    q.add_argument("dir")
    q.add_argument("--json", action="store_true", help="print meta.json-like JSON instead of text")
    q.set_defaults(func=cmd_inspect)

    s = sub.add_parser("shrink", help="shrink a condensed set to a smaller IPC (YOCO and pruning baselines)")
    s.add_argument("dir", help="source condensed-set directory")
    s.add_argument("--to-ipc", type=int, required=True)
    s.add_argument("--rule", default="yoco", help="recipe: yoco, random, random_balance, el2n_hard, ccs, ...")
    s.add_argument("--out", required=True)
    s.add_argument("--runs-dynamics", type=int, default=1, help="dynamics runs averaged (YOCO uses 3)")
    s.add_argument("--stop-epoch", type=int, default=None, help="LBPE stop epoch (default: per source method)")
    s.add_argument("--topk", type=int, default=None, help="LBPE top-K epochs (default: per source method)")
    s.add_argument("--epochs", type=int, default=None, help="dynamics training epochs (default: the protocol's)")
    s.add_argument("--protocol", default="yoco", help="dynamics training protocol")
    s.add_argument("--seed", type=int, default=0)
    common_data_args(s)
    s.set_defaults(func=cmd_shrink)


def _loader_options(args: argparse.Namespace) -> dict:
    opts = parse_params(args.option)
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

    from adapters.loaders import LOADERS

    loader = LOADERS.get(args.format)
    opts = _loader_options(args)
    accepted = set(pyinspect.signature(loader).parameters)
    bad = sorted(set(opts) - accepted)
    if bad:
        raise ConfigError(f"format {args.format!r} takes no option(s) {bad} (it takes {sorted(accepted - {'path'})})")
    path = args.path if args.format == "hfhub" else Path(args.path)
    sets = loader(path, **opts)
    out = Path(args.out)
    targets = [out] if len(sets) == 1 else [out / f"exp{cs.provenance.get('experiment', i)}"
                                           for i, cs in enumerate(sets)]
    for cs, d in zip(sets, targets, strict=True):
        cs.save(d)
        print(f"wrote {d}: {cs.method} {cs.dataset} IPC {cs.ipc} factor {cs.factor} space {cs.space} "
              f"{cs.label_kind} labels, {len(cs.labels)} images, sha256 {cs.checksum()[:12]}")
    return 0


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
    from condensed import load_condensed

    cs = load_condensed(args.dir)
    print(json.dumps(cs.meta(), indent=2, sort_keys=True) if args.json else describe(cs))
    return 0


def cmd_shrink(args: argparse.Namespace) -> int:
    from condensed import load_condensed
    from condensed.shrink import shrink

    src = load_condensed(args.dir)
    small = shrink(src, args.to_ipc, rule=args.rule, runs_dynamics=args.runs_dynamics, stop_epoch=args.stop_epoch,
                   topk=args.topk, epochs=args.epochs, protocol=args.protocol, seed=args.seed, device=args.device,
                   data_root=args.data_root, cache_dir=args.cache_dir)
    small.save(args.out)
    print(f"wrote {args.out}: {small.method} IPC {src.ipc}x{src.factor ** 2} -> {small.ipc} "
          f"rule {args.rule}, per class {small.class_counts()}")
    return 0
