"""``ddbench condense``: condense a dataset with DC, DSA, DM or IDC, optionally after GoldFromOres pruning."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli import common_data_args, parse_params


def add_commands(sub: argparse._SubParsersAction) -> None:
    from adapters.condense import list_condensers

    p = sub.add_parser("condense", help="condense a real dataset into a CondensedSet")
    p.add_argument("--method", required=True, choices=list_condensers())
    p.add_argument("--dataset", required=True)
    p.add_argument("--ipc", type=int, required=True, help="stored images per class")
    p.add_argument("--out", required=True, help="output directory (images.safetensors + meta.json)")
    p.add_argument("--iterations", type=int, default=None, help="outer iterations (default: the reference's)")
    p.add_argument("--init", choices=("real", "noise"), default=None)
    p.add_argument("--model", default=None, help="model name (timm registry; default convnet)")
    p.add_argument("--drop-criterion", default=None, help="GoldFromOres criterion, e.g. LossInit_large, Random")
    ratio = p.add_mutually_exclusive_group()
    ratio.add_argument("--drop-ratio", type=float, default=None)
    ratio.add_argument("--keep-ratio", type=float, default=None)
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint here; a rerun resumes from it")
    p.add_argument("--score-cache", default=None, help="cache GoldFromOres scores here")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any config field, e.g. lr_img=0.5")
    p.add_argument("--seed", type=int, default=0)
    common_data_args(p)
    p.set_defaults(func=run_condense)


def run_condense(args: argparse.Namespace) -> int:
    from adapters.condense import PrePrune, create_condenser
    from harness.data import load_dataset
    from harness.errors import ConfigError

    cond = create_condenser(args.method)
    overrides = parse_params(args.param)
    for key in ("iterations", "init", "model"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    cfg = cond.default_config(**overrides)
    pre = None
    if args.drop_criterion:
        if args.drop_ratio is None and args.keep_ratio is None:
            raise ConfigError("--drop-criterion needs --drop-ratio or --keep-ratio")
        pre = PrePrune(args.drop_criterion, drop_ratio=args.drop_ratio, keep_ratio=args.keep_ratio, seed=args.seed)
    elif args.drop_ratio is not None or args.keep_ratio is not None:
        raise ConfigError("--drop-ratio/--keep-ratio need --drop-criterion")
    real = load_dataset(args.dataset, "train", data_root=args.data_root, download=args.download,
                        cache_dir=args.cache_dir)

    def progress(done: int, total: int, info: dict) -> None:
        if done == total or done % max(1, total // 20) == 0:
            extra = f" val_acc {info['val_acc']:.4f}" if "val_acc" in info else ""
            print(f"[{args.method}] {done}/{total} loss {info['loss']:.4f}{extra}", flush=True)

    cs = cond.condense(real, args.ipc, cfg, pre_prune=pre, seed=args.seed, device=args.device,
                       checkpoint_dir=args.checkpoint_dir, progress=progress, score_cache=args.score_cache)
    out = cs.save(Path(args.out))
    print(f"wrote {out} ({cs.images.shape[0]} images, {cs.method}, ipc {cs.ipc}, factor {cs.factor})")
    return 0
