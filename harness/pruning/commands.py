"""Pruning sub-commands: ``dynamics``, ``score``, ``select``, ``coreset``, ``recipes``. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import json

import numpy as np

from harness.cli import common_data_args, parse_params, write_json_out
from harness.errors import ConfigError, FormatError


def _budget_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--keep", type=float, help="keep fraction in (0, 1]")
    g.add_argument("--prune", type=float, help="pruning rate in [0, 1)")
    g.add_argument("--count", type=int, help="number of samples kept")
    g.add_argument("--ipc", type=int, help="samples kept per class")


def _budget(args: argparse.Namespace):
    from harness.pruning.select import Budget

    if args.keep is not None:
        return Budget.keep_fraction(args.keep)
    if args.prune is not None:
        return Budget.prune_rate(args.prune)
    if args.count is not None:
        return Budget.count(args.count)
    return Budget.ipc(args.ipc)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dynamics", help="train a model on a dataset and record per-sample training dynamics")
    p.add_argument("--dataset", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--model", default=None, help="default: the protocol's")
    p.add_argument("--protocol", default="ccs", help="training protocol preset (ccs, tdds, dual, yoco ...)")
    p.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    p.add_argument("--param", action="append", help="other protocol overrides, key=value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-logits", action="store_true", help="also store full logits (epochs x N x C)")
    p.add_argument("--out", required=True, help="dynamics directory (resumed if it holds the same run)")
    common_data_args(p)
    p.set_defaults(func=cmd_dynamics)

    p = sub.add_parser("score", help="compute an index-aligned pruning score from dynamics")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dynamics", help="a dynamics directory (ddbench dynamics --out)")
    src.add_argument("--from-logits", help="a TDDS/DUAL dump directory ({e}_Output.npy + {e}_Index.npy)")
    p.add_argument("--labels", help="labels.npy (N,) for --from-logits")
    p.add_argument("--num-classes", type=int, default=None, help="for --from-logits (default: max label + 1)")
    p.add_argument("--import-to", default=None, help="with --from-logits: keep the imported dynamics here")
    p.add_argument("--method", required=True, help="a score name (see `ddbench recipes`)")
    p.add_argument("--param", action="append", help="score parameters, key=value (e.g. T=30 J=10)")
    p.add_argument("--out", required=True, help="scores .npy (float64, index-aligned)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("select", help="select kept indices from scores with a recipe")
    p.add_argument("--scores", default=None, help="scores .npy (index-aligned); not needed for random/ssp")
    p.add_argument("--dynamics", default=None, help="or: a dynamics directory (scores computed by the recipe)")
    p.add_argument("--labels", default=None, help="labels .npy (default: the dynamics' labels)")
    p.add_argument("--features", default=None, help="features .npy (N, D) for ssp")
    p.add_argument("--recipe", required=True)
    p.add_argument("--opt", action="append", help="selection-rule options, key=value (e.g. cutoff_ratio=0.3)")
    p.add_argument("--seed", type=int, default=0)
    _budget_args(p)
    p.add_argument("--out", required=True, help="kept indices .npy (sorted int64)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("coreset", help="the coreset flow: dynamics -> score -> select -> train on the subset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--recipe", required=True)
    _budget_args(p)
    p.add_argument("--protocol-dynamics", default="ccs")
    p.add_argument("--protocol-train", default="ccs")
    p.add_argument("--model", default=None)
    p.add_argument("--epochs-dynamics", type=int, default=None)
    p.add_argument("--epochs-train", type=int, default=None)
    p.add_argument("--runs", type=int, default=None)
    p.add_argument("--param", action="append", help="score parameters, key=value")
    p.add_argument("--opt", action="append", help="selection-rule options, key=value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="runs")
    p.add_argument("--out", default=None, help="write the result JSON here")
    g = p.add_argument_group("streamed datasets (imagenet): DDP under torchrun")
    g.add_argument("--nproc", type=int, default=None, help="processes (default: the GPUs, else 1)")
    g.add_argument("--num-workers", type=int, default=4, help="DataLoader workers per process")
    g.add_argument("--img-size", type=int, default=None, help="training resolution (default: the dataset's)")
    common_data_args(p)
    p.set_defaults(func=cmd_coreset)

    p = sub.add_parser("recipes", help="list pruning recipes, scores and selection rules")
    p.add_argument("--expanded", action="store_true", help="every valid suffix combination")
    p.set_defaults(func=cmd_recipes)


def _load_npy(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: cannot read {what} ({e})") from None


def cmd_dynamics(args: argparse.Namespace) -> int:
    from harness.data import load_dataset
    from harness.dynamics import record_dynamics
    from harness.train import get_protocol

    overrides = parse_params(args.param)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.model:
        overrides["model"] = args.model
    proto = get_protocol(args.protocol, args.dataset, **overrides)
    train = load_dataset(args.dataset, args.split, data_root=args.data_root, download=args.download,
                         cache_dir=args.cache_dir)
    print(f"{args.dataset}:{args.split} N={len(train)}; {proto.describe()}")
    dyn = record_dynamics(train, proto, seed=args.seed, out_dir=args.out, device=args.device,
                          keep_logits=args.keep_logits, progress=lambda e, t: print(f"epoch {e}/{t}", flush=True))
    print(f"wrote {dyn}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from harness.dynamics import Dynamics, import_logit_dumps
    from harness.pruning.scores import compute_score, get_score, save_scores

    spec = get_score(args.method)  # unknown names fail before any work
    params = parse_params(args.param)
    if args.dynamics:
        dyn = Dynamics.open(args.dynamics)
    else:
        if not args.labels:
            raise ConfigError("--from-logits needs --labels labels.npy")
        labels = _load_npy(args.labels, "labels").astype(np.int64)
        dyn = import_logit_dumps(args.from_logits, labels, args.num_classes or int(labels.max()) + 1,
                                 out_dir=args.import_to)
    scores = compute_score(args.method, dyn, **params)
    save_scores(args.out, scores)
    print(f"wrote {args.out}: {args.method} ({spec.direction}) over {dyn.n} samples, {dyn.epochs} epochs")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from harness.dynamics import Dynamics
    from harness.pruning.recipes import parse_recipe, select_with_recipe
    from harness.pruning.scores import load_scores
    from harness.pruning.select import save_kept

    recipe = parse_recipe(args.recipe)
    budget = _budget(args)
    opts = parse_params(args.opt)
    dyn = Dynamics.open(args.dynamics) if args.dynamics else None
    if args.labels:
        labels = _load_npy(args.labels, "labels").astype(np.int64)
    elif dyn is not None:
        labels = dyn.labels
    else:
        raise ConfigError("--labels (or --dynamics) is required")
    if dyn is not None:
        source = dyn
    elif args.scores:
        source = load_scores(args.scores, labels.shape[0])
    elif recipe.score:
        raise ConfigError(f"recipe {recipe.name} needs --scores or --dynamics")
    else:
        source = None
    features = _load_npy(args.features, "features") if args.features else None
    kept = select_with_recipe(recipe, source, labels, budget, seed=args.seed, features=features, **opts)
    save_kept(args.out, kept)
    counts = np.bincount(labels[kept], minlength=int(labels.max()) + 1)
    print(f"wrote {args.out}: {kept.size}/{labels.size} kept ({recipe.describe()}, {budget}); per class {counts}")
    return 0


def cmd_coreset(args: argparse.Namespace) -> int:
    from functools import partial

    from harness.data import get_spec
    from harness.pruning.coreset import run_coreset

    if get_spec(args.dataset).streaming:
        from harness.pruning.stream_coreset import run_coreset_streaming

        run_coreset = partial(run_coreset_streaming, nproc=args.nproc, num_workers=args.num_workers,
                              img_size=args.img_size)
    report = run_coreset(args.dataset, args.recipe, _budget(args), data_root=args.data_root,
                         protocol_dynamics=args.protocol_dynamics, protocol_train=args.protocol_train,
                         seed=args.seed, workdir=args.workdir, device=args.device, model=args.model,
                         epochs_dynamics=args.epochs_dynamics, epochs_train=args.epochs_train, runs=args.runs,
                         score_params=parse_params(args.param), rule_opts=parse_params(args.opt),
                         cache_dir=args.cache_dir, download=args.download, progress=print)
    print(json.dumps(report, indent=2))
    write_json_out(args.out, report)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from harness.pruning.recipes import RECIPES, list_recipes
    from harness.pruning.scores import get_score, list_scores
    from harness.pruning.select import list_rules

    print("recipes:")
    for name in list_recipes():
        print(f"  {name:22s} {RECIPES.get(name).describe()}")
    if args.expanded:
        print("  with suffixes: " + ", ".join(list_recipes(expanded=True)))
    print("scores:")
    for name in list_scores():
        s = get_score(name)
        print(f"  {name:14s} {s.direction:9s} {s.params()}  [{s.paper}]")
    print("rules: " + ", ".join(list_rules()))
    return 0
