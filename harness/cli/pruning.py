"""Pruning sub-commands: ``dynamics``, ``score``, ``select``, ``coreset``, ``recipes``. Thin: parse, call, print."""

from __future__ import annotations

import argparse
import json
from functools import partial

import numpy as np

from harness.cli.common import (
    check_out_file,
    check_out_root,
    checked_params,
    common_data_args,
    engine_args,
    engine_options,
    keep_fraction,
    make_progress,
    nonneg_int,
    parse_params,
    positive_int,
    progress_args,
    prune_fraction,
    seed_int,
    write_json_out,
)
from harness.data import get_spec, load_dataset
from harness.dynamics import FORMAT, LOCK, Dynamics, import_logit_dumps, record_dynamics
from harness.engine.protocol import TrainProtocol, create_protocol
from harness.errors import ConfigError, FormatError
from harness.io import check_output_dir, read_meta_json
from harness.progress import EpochPhases
from harness.pruning import scores as S
from harness.pruning.coreset import run_coreset
from harness.pruning.recipes import RECIPES, list_recipes, parse_recipe, select_with_recipe
from harness.pruning.scores import compute_score, get_score, list_scores, load_scores, save_scores
from harness.pruning.select import RULES, Budget, list_rules, save_kept
from harness.pruning.stream_coreset import run_coreset_streaming
from harness.validate import check_model_name, check_values


def _budget_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--keep", type=keep_fraction, help="keep fraction in (0, 1]")
    g.add_argument("--prune", type=prune_fraction, help="pruning rate in [0, 1)")
    g.add_argument("--count", type=positive_int, help="number of samples kept")
    g.add_argument("--ipc", type=positive_int, help="samples kept per class")


def _budget(args: argparse.Namespace):
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
    p.add_argument("--epochs", type=positive_int, default=None, help="override the protocol's epochs")
    p.add_argument("--param", action="append", help="other protocol overrides, key=value")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--keep-logits", action="store_true", help="also store full logits (epochs x N x C)")
    p.add_argument("--out", required=True, help="dynamics directory (resumed if it holds the same run)")
    engine_args(p)
    progress_args(p)
    common_data_args(p)
    p.set_defaults(func=cmd_dynamics)

    p = sub.add_parser("score", help="compute an index-aligned pruning score from dynamics")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dynamics", help="a dynamics directory (ddbench dynamics --out)")
    src.add_argument("--from-logits", help="a TDDS/DUAL dump directory ({e}_Output.npy + {e}_Index.npy)")
    p.add_argument("--labels", help="labels.npy (N,) for --from-logits")
    p.add_argument("--num-classes", type=positive_int, default=None,
                   help="for --from-logits (default: max label + 1)")
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
    p.add_argument("--seed", type=seed_int, default=0)
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
    p.add_argument("--epochs-dynamics", type=positive_int, default=None)
    p.add_argument("--epochs-train", type=positive_int, default=None)
    p.add_argument("--runs", type=positive_int, default=None)
    p.add_argument("--param", action="append", help="score parameters, key=value")
    p.add_argument("--opt", action="append", help="selection-rule options, key=value")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--workdir", default="runs")
    p.add_argument("--out", default=None, help="write the result JSON here")
    engine_args(p)
    g = p.add_argument_group("streamed datasets (imagenet): DDP under torchrun")
    g.add_argument("--nproc", type=positive_int, default=None, help="processes (default: the GPUs, else 1)")
    g.add_argument("--num-workers", type=nonneg_int, default=4, help="DataLoader workers per process")
    g.add_argument("--img-size", type=positive_int, default=None, help="training resolution (default: the dataset's)")
    progress_args(p)
    common_data_args(p)
    p.set_defaults(func=cmd_coreset)

    p = sub.add_parser("recipes", help="list pruning recipes, scores and selection rules")
    p.add_argument("--expanded", action="store_true", help="every valid suffix combination")
    p.set_defaults(func=cmd_recipes)


def _load_npy(path: str, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise FormatError(f"{path}: cannot read {what} ({' '.join(str(e).split())})") from None


MAX_CLASSES = 1 << 20  # class ids beyond this are not labels (and would make per-class counts explode)


def _load_labels(path: str, n: int | None = None) -> np.ndarray:
    """A labels .npy: 1-D, integer values >= 0 (integral floats are accepted; fractions are refused)."""
    arr = _load_npy(path, "labels")
    if arr.ndim != 1 or arr.size == 0 or (n is not None and arr.shape[0] != n):
        raise FormatError(f"{path}: labels of shape {arr.shape}, expected ({n if n is not None else 'N'},) "
                          "index-aligned with the dataset")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
            raise FormatError(f"{path}: labels must be whole numbers, got non-integer {arr.dtype} values")
    elif arr.dtype.kind not in "iu":
        raise FormatError(f"{path}: labels of dtype {arr.dtype}, expected integers")
    if arr.min() < 0:
        raise FormatError(f"{path}: labels must be >= 0, got {arr.min()}")
    if arr.max() >= MAX_CLASSES:
        raise FormatError(f"{path}: label {arr.max()} is not a class id (expected < {MAX_CLASSES})")
    return arr.astype(np.int64)


def _load_score_file(path: str, n: int) -> np.ndarray:
    try:
        raw = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise FormatError(f"{path}: cannot read scores ({' '.join(str(e).split())}); expected a 1-D .npy") from None
    if raw.dtype.kind not in "fiu":
        raise FormatError(f"{path}: scores of dtype {raw.dtype}, expected real numbers")
    scores = load_scores(path, n)
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        raise FormatError(f"{path}: {bad} of {scores.size} scores are NaN or infinite")
    return scores


def _score_fn(name: str):
    return get_score(name).fn


def _rule_opts(recipe, items, option: str = "--opt") -> dict:
    """``--opt`` checked against the recipe's selection rule (names, types); ``cutoff_score`` names a score."""
    rule = RULES.get(recipe.rule)
    raw = parse_params(items, option)
    extra = {}
    if recipe.rule == "stratified" and "cutoff_score" in raw:
        extra["cutoff_score"] = str(raw.pop("cutoff_score"))
        get_score(extra["cutoff_score"])
    opts = check_values(rule, raw, option, exclude=("seed", "features", "cutoff_scores", "mu", "num_classes"))
    return {**opts, **extra}


def _check_dynamics_out(path: str, option: str) -> None:
    """A dynamics folder: new, empty, or a dynamics run (resumed); never a folder with other files."""
    def is_dynamics(d):
        if not (d / "meta.json").exists():  # a recorder that has only taken the lock so far
            return {f.name for f in d.iterdir()} <= {LOCK, f"{LOCK}.reclaim"}
        try:
            read_meta_json(d / "meta.json", FORMAT)
        except (FormatError, OSError):
            return False
        return True

    check_output_dir(path, what="dynamics run", is_ours=is_dynamics, overwrite=True, option=option)


def cmd_dynamics(args: argparse.Namespace) -> int:
    get_spec(args.dataset)
    _check_dynamics_out(args.out, "--out")
    overrides = checked_params(TrainProtocol, args.param, exclude=("name",))
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.model is not None:
        overrides["model"] = args.model
    if "model" in overrides:
        check_model_name(str(overrides["model"]))
    proto = create_protocol(args.protocol, args.dataset, **overrides)
    train = load_dataset(args.dataset, args.split, data_root=args.data_root, download=args.download,
                         cache_dir=args.cache_dir)
    print(f"{args.dataset}:{args.split} N={len(train)}; {proto.describe()}")
    with EpochPhases(make_progress(args), "dynamics") as cb:
        dyn = record_dynamics(train, proto, seed=args.seed, out_dir=args.out, device=args.device,
                              keep_logits=args.keep_logits, progress=cb.epochs, options=engine_options(args))
    print(f"wrote {dyn}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    spec = get_score(args.method)  # unknown names fail before any work
    check_out_file(args.out)
    if args.import_to:
        _check_dynamics_out(args.import_to, "--import-to")
    params = checked_params(spec.fn, args.param)
    if args.dynamics:
        for opt, val in (("--labels", args.labels), ("--num-classes", args.num_classes),
                         ("--import-to", args.import_to)):
            if val is not None:
                raise ConfigError(f"{opt} is for --from-logits; --dynamics carries its own")
        dyn = Dynamics.open(args.dynamics)
    else:
        if not args.labels:
            raise ConfigError("--from-logits needs --labels labels.npy")
        labels = _load_labels(args.labels)
        num_classes = args.num_classes if args.num_classes is not None else int(labels.max()) + 1
        if int(labels.max()) >= num_classes:
            raise ConfigError(f"--num-classes {num_classes}: {args.labels} holds label {int(labels.max())}")
        dyn = import_logit_dumps(args.from_logits, labels, num_classes, out_dir=args.import_to)
    scores = compute_score(args.method, dyn, **params)
    bad = int((~np.isfinite(scores)).sum())
    if bad:
        src = args.dynamics or args.from_logits
        raise FormatError(f"{src}: {args.method} is NaN or infinite for {bad} of {scores.size} samples "
                          "(the recorded logits/statistics hold non-finite values); nothing written")
    save_scores(args.out, scores)
    print(f"wrote {args.out}: {args.method} ({spec.direction}) over {dyn.n} samples, {dyn.epochs} epochs")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    recipe = parse_recipe(args.recipe)
    check_out_file(args.out)
    budget = _budget(args)
    opts = _rule_opts(recipe, args.opt)
    if args.scores and not recipe.score:
        raise ConfigError(f"--scores: recipe {recipe.name} uses no score (rule {recipe.rule}); drop --scores")
    if args.features and recipe.rule != "kmeans":
        raise ConfigError(f"--features: recipe {recipe.name} does not use features (only k-means recipes: ssp)")
    dyn = Dynamics.open(args.dynamics) if args.dynamics else None
    if args.labels:
        labels = _load_labels(args.labels, dyn.n if dyn is not None else None)
        if dyn is not None and not np.array_equal(labels, dyn.labels):
            raise ConfigError(f"--labels {args.labels} differ from the labels of --dynamics {args.dynamics}")
    elif dyn is not None:
        labels = dyn.labels
    else:
        raise ConfigError("--labels (or --dynamics) is required")
    n = labels.shape[0]
    used: list[str] = []  # what each input provided, printed with the result
    if args.scores:
        source = _load_score_file(args.scores, n)
        used.append(f"scores from {args.scores}")
        if dyn is not None:
            used.append(f"labels from {args.dynamics}" if not args.labels else f"labels from {args.labels}")
            used += _extras_from_dynamics(recipe, dyn, opts, args.dynamics)
        elif recipe.rule == "beta":
            raise ConfigError(f"recipe {recipe.name} also needs --dynamics (mu, the mean target probability "
                              "over the first epochs) besides --scores")
        elif opts.get("cutoff_score") not in (None, recipe.score):
            raise ConfigError(f"--opt cutoff_score={opts['cutoff_score']} needs --dynamics to compute the cut-off "
                              f"scores (the given --scores are {recipe.score})")
    elif dyn is not None:
        source = dyn
        used.append(f"{recipe.score}{dict(recipe.score_params) or ''} scores computed from {args.dynamics}"
                    if recipe.score else f"labels from {args.dynamics}")
    elif recipe.score:
        raise ConfigError(f"recipe {recipe.name} needs --scores or --dynamics")
    else:
        source = None
    features = None
    if args.features:
        features = _load_npy(args.features, "features")
        if features.ndim != 2 or features.shape[0] != n or features.dtype.kind not in "fiu":
            raise FormatError(f"{args.features}: features of shape {features.shape} ({features.dtype}), "
                              f"expected ({n}, D) numbers, one row per sample")
        if not np.isfinite(features).all() or not np.isfinite((features.astype(np.float64) ** 2).sum(1)).all():
            raise FormatError(f"{args.features}: features hold NaN or infinite values (or overflow when squared)")
        used.append(f"features from {args.features}")
    elif recipe.rule == "kmeans":
        raise ConfigError(f"recipe {recipe.name} needs --features (N, D) .npy")
    kept = select_with_recipe(recipe, source, labels, budget, seed=args.seed, features=features, **opts)
    save_kept(args.out, kept)
    counts = np.bincount(labels[kept], minlength=int(labels.max()) + 1)
    print(f"wrote {args.out}: {kept.size}/{labels.size} kept ({recipe.describe()}, {budget}); per class {counts}")
    if used:
        print("used: " + "; ".join(used))
    return 0


def _extras_from_dynamics(recipe, dyn, opts: dict, where: str) -> list[str]:
    """With given scores, what the rule still takes from the dynamics (DUAL's mu, a CCS cut-off score)."""
    notes = []
    if recipe.rule == "beta" and opts.get("mu") is None:
        T = int(recipe.score_params.get("T", 30))
        opts["mu"] = S.mean_target_prob(dyn, epochs=T)
        notes.append(f"mu (mean target probability, first {min(T, dyn.epochs)} epochs) from {where}")
    if recipe.rule == "stratified":
        key = opts.get("cutoff_score", recipe.rule_opts.get("cutoff_score"))
        if key is not None and key != recipe.score and opts.get("cutoff_scores") is None:
            opts["cutoff_scores"] = S.compute_score(str(key), dyn)
            opts.setdefault("cutoff_direction", S.get_score(str(key)).direction)
            opts.pop("cutoff_score", None)
            notes.append(f"cut-off scores ({key}) from {where}")
        elif key is not None:
            notes.append(f"cut-off on the given scores ({key})")
    return notes


def cmd_coreset(args: argparse.Namespace) -> int:
    recipe = parse_recipe(args.recipe)  # names, parameters and options fail before any training
    check_out_file(args.out)
    check_out_root(args.workdir, "--workdir")
    score_params = checked_params(_score_fn(recipe.score), args.param) if recipe.score else parse_params(args.param)
    if score_params and not recipe.score:
        raise ConfigError(f"--param: recipe {recipe.name} has no score to take parameters")
    rule_opts = _rule_opts(recipe, args.opt)
    create_protocol(args.protocol_dynamics, args.dataset)
    create_protocol(args.protocol_train, args.dataset)
    if args.model is not None:
        check_model_name(args.model)
    flow = run_coreset
    if get_spec(args.dataset).streaming:
        flow = partial(run_coreset_streaming, nproc=args.nproc, num_workers=args.num_workers, img_size=args.img_size)
    report = flow(args.dataset, args.recipe, _budget(args), data_root=args.data_root,
                  protocol_dynamics=args.protocol_dynamics, protocol_train=args.protocol_train,
                  seed=args.seed, workdir=args.workdir, device=args.device, model=args.model,
                  epochs_dynamics=args.epochs_dynamics, epochs_train=args.epochs_train, runs=args.runs,
                  score_params=score_params, rule_opts=rule_opts, options=engine_options(args),
                  cache_dir=args.cache_dir, download=args.download, progress=make_progress(args))
    print(json.dumps(report, indent=2))
    write_json_out(args.out, report)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
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
