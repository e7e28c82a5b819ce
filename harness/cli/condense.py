"""``ddbench condense``: condense a dataset with DC, DSA, DM or IDC, optionally after GoldFromOres pruning."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from adapters.condense import PrePrune, create_condenser, list_condensers
from harness.cli.common import (
    check_out_root,
    check_set_out,
    checked_params,
    common_data_args,
    engine_args,
    engine_options,
    keep_fraction,
    make_progress,
    nonneg_int,
    positive_int,
    progress_args,
    prune_fraction,
    seed_int,
)
from harness.data import get_spec, load_dataset
from harness.errors import ConfigError
from harness.progress import IterationPhases
from harness.pruning.goldfromores import check_released
from harness.validate import check_model_name


def add_commands(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("condense", help="condense a real dataset into a CondensedSet")
    p.add_argument("--method", required=True, choices=list_condensers())
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=positive_int, required=True, help="stored images per class")
    p.add_argument("--out", required=True, help="output directory (images.safetensors + meta.json); new or empty")
    p.add_argument("--overwrite", action="store_true", help="replace a condensed set already at --out")
    p.add_argument("--iterations", type=nonneg_int, default=None,
                   help="outer iterations (default: the reference's; 0: the initialisation only)")
    p.add_argument("--init", choices=("real", "noise"), default=None)
    p.add_argument("--model", default=None, help="model name (timm registry; default convnet)")
    p.add_argument("--drop-criterion", default=None, help="GoldFromOres criterion, e.g. LossInit_large, Random")
    ratio = p.add_mutually_exclusive_group()
    ratio.add_argument("--drop-ratio", type=prune_fraction, default=None, help="fraction dropped per class, [0, 1)")
    ratio.add_argument("--keep-ratio", type=keep_fraction, default=None, help="fraction kept per class, (0, 1]")
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint here; a rerun resumes from it")
    p.add_argument("--score-cache", default=None, help="cache GoldFromOres scores here")
    p.add_argument("--drop-scores", default=None, metavar="authors|FILE",
                   help="drop by given scores instead of computing the criterion: 'authors' (their released "
                        "<data-root>/goldfromores/<DATASET>_<Indicator>.json, mapped onto our order) or a .json/.npy "
                        "file index-aligned with our dataset order")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any config field, e.g. lr_img=0.5")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (1 is best on a shared CPU)")
    common_data_args(p)
    engine_args(p)
    progress_args(p)
    p.set_defaults(func=run_condense)


def run_condense(args: argparse.Namespace) -> int:

    out = check_set_out(args.out, overwrite=args.overwrite)
    for option, d in (("--checkpoint-dir", args.checkpoint_dir), ("--score-cache", args.score_cache)):
        if d is not None:
            check_out_root(d, option)
            if Path(d).resolve() == out or out in Path(d).resolve().parents:
                raise ConfigError(f"{option} {d}: inside --out {args.out}, which is replaced by the set; "
                                  "keep it elsewhere")
    engine = engine_options(args)  # --exact with --path/--precision/--compile: refused before any work
    cond = create_condenser(args.method)
    get_spec(args.dataset)
    overrides = checked_params(cond.config_cls, args.param)  # names, types, ranges: before any work
    for key in ("iterations", "init", "model"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if "model" in overrides:
        check_model_name(str(overrides["model"]), "--model" if args.model is not None else "--param model")
    cfg = cond.default_config(**overrides)
    pre = None
    if args.drop_criterion:
        if args.drop_ratio is None and args.keep_ratio is None:
            raise ConfigError("--drop-criterion needs --drop-ratio or --keep-ratio")
        pre = PrePrune(args.drop_criterion, drop_ratio=args.drop_ratio, keep_ratio=args.keep_ratio, seed=args.seed,
                       scores=args.drop_scores, data_root=args.data_root)
        if args.drop_scores == "authors":  # an unreleased pair fails before the data is loaded

            check_released(args.dataset, pre.indicator)
        elif args.drop_scores is not None and not Path(args.drop_scores).is_file():
            raise ConfigError(f"--drop-scores {args.drop_scores}: no such file (expected 'authors' or a .json/.npy)")
    elif args.drop_ratio is not None or args.keep_ratio is not None or args.drop_scores is not None:
        raise ConfigError("--drop-ratio/--keep-ratio/--drop-scores need --drop-criterion")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    real = load_dataset(args.dataset, "train", data_root=args.data_root, download=args.download,
                        cache_dir=args.cache_dir)

    with IterationPhases(make_progress(args), f"condense {args.method}") as progress:  # on stderr
        cs = cond.condense(real, args.ipc, cfg, pre_prune=pre, seed=args.seed, device=args.device,
                           checkpoint_dir=args.checkpoint_dir, progress=progress, score_cache=args.score_cache,
                           engine=engine)
    cs.save(out, overwrite=args.overwrite)
    eng = cs.provenance.get("engine", {})
    print(f"wrote {args.out} ({cs.images.shape[0]} images, {cs.method}, ipc {cs.ipc}, factor {cs.factor}; "
          f"engine {eng.get('path')}/{eng.get('precision')}/{'compiled' if eng.get('compile') else 'eager'})")
    return 0
