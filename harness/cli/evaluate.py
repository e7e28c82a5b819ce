"""Core sub-commands: ``evaluate``, ``quickstart`` and the listings (datasets, models, protocols)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from adapters.loaders import load_published
from condensed import load_condensed, prepare_for_eval
from harness.cli.common import (
    check_out_file,
    check_set_geometry,
    checked_params,
    common_data_args,
    engine_args,
    engine_options,
    make_progress,
    nonneg_int,
    positive_int,
    progress_args,
    seed_int,
    write_json_out,
)
from harness.data import get_spec, load_dataset
from harness.engine.protocol import TrainProtocol, create_protocol, list_protocols
from harness.errors import ConfigError
from harness.evaluate import EvalResult, evaluate, random_per_class
from harness.io import git_revision, versions
from harness.progress import EpochPhases
from harness.validate import check_model_name


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a condensed set or a random real subset under a protocol")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--set", help="a condensed-set directory (images.safetensors + meta.json) or a VICO res_*.pt")
    src.add_argument("--dataset", help="evaluate a subset of this dataset's training split (with --ipc)")
    p.add_argument("--ipc", type=positive_int, help="images per class for --dataset")
    p.add_argument("--select", default="random", choices=["random"], help="how to pick the real subset")
    p.add_argument("--experiment", type=nonneg_int, default=None, help="VICO file: one experiment (default: all)")
    p.add_argument("--protocol", default="vico-dc", help=f"one of {', '.join(list_protocols())}")
    p.add_argument("--model", default=None, help="evaluation model (default: the protocol's)")
    p.add_argument("--runs", type=positive_int, default=None,
                   help="models trained per set (per experiment; default: the protocol's, 5)")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="override the protocol's epochs (say so when reporting)")
    p.add_argument("--param", action="append", help="other protocol overrides, key=value (e.g. precision=bf16)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", default=None, help="write the result JSON here")
    engine_args(p)
    progress_args(p)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (1 is best on a shared CPU)")
    common_data_args(p)
    p.set_defaults(func=cmd_evaluate)


def _protocol(args: argparse.Namespace, dataset: str):
    """The protocol with every override applied and checked (names, types, ranges) before any training.

    ``--runs``/``--epochs``/``--model`` become protocol fields, so the recorded protocol is the one that ran
    (``runs: 1`` after ``--runs 1``); ``--precision`` is an engine option, and the recorded protocol says the
    precision that ran (:func:`harness.evaluate.evaluate`).
    """
    overrides = checked_params(TrainProtocol, args.param, exclude=("name",))
    for key in ("model", "epochs", "runs"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if "model" in overrides:
        check_model_name(str(overrides["model"]), "--model" if args.model is not None else "--param model")
    return create_protocol(args.protocol, dataset, **overrides)


def _load_sets(path: Path, experiment: int | None):
    if path.is_dir():
        if experiment is not None:
            raise ConfigError(f"--experiment {experiment}: {path} is a condensed-set directory (one set), "
                              "not a VICO .pt file")
        return [load_condensed(path)]
    if path.suffix == ".pt":
        return load_published("vico", path, experiment=experiment)
    raise ConfigError(f"--set {path}: expected a condensed-set directory or a VICO res_*.pt file")


def _evaluator(args: argparse.Namespace):
    options = engine_options(args)
    display = make_progress(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    def run(train, test, proto, *, seed: int, zca=None, name: str = "train") -> EvalResult:
        with EpochPhases(display, name, runs=proto.runs) as cb:
            return evaluate(train, test, proto, runs=proto.runs, seed=seed, device=args.device, zca=zca,
                            options=options, progress=cb)

    return run


def cmd_evaluate(args: argparse.Namespace) -> int:
    check_out_file(args.out)  # a folder or unwritable --out fails now, not after the evaluation
    evaluate = _evaluator(args)
    results: list[EvalResult] = []
    report: dict = {"versions": versions(), "git": git_revision()}
    if args.set is not None:
        if args.ipc is not None:
            raise ConfigError("--ipc is for --dataset; a --set has its own IPC")
        create_protocol(args.protocol, "cifar10")  # an unknown --protocol fails before reading anything
        sets = _load_sets(Path(args.set), args.experiment)
        dataset = sets[0].dataset
        for i, cs in enumerate(sets):
            check_set_geometry(cs, f"--set {args.set}" + (f" (experiment {i})" if len(sets) > 1 else ""))
        proto = _protocol(args, dataset)
        test = load_dataset(dataset, "test", data_root=args.data_root, download=args.download,
                            cache_dir=args.cache_dir)
        print(f"{args.set}: {len(sets)} set(s), {sets[0].method} on {dataset}, IPC {sets[0].ipc}, "
              f"space {sets[0].space}")
        for i, cs in enumerate(sets):
            li, zca = prepare_for_eval(cs, dataset, args.data_root, args.cache_dir)
            r = evaluate(li, test, proto, seed=args.seed + 1000 * i, zca=zca,
                         name=f"set {i + 1}/{len(sets)}" if len(sets) > 1 else "train")
            print(f"  set {i}: {r}")
            results.append(r)
        report["source"] = {"set": str(args.set), "checksums": [s.checksum() for s in sets]}
    else:
        if args.ipc is None:
            raise ConfigError("--dataset needs --ipc K (images per class)")
        if args.experiment is not None:
            raise ConfigError("--experiment is for a VICO --set file")
        dataset = args.dataset
        get_spec(dataset)  # an unknown dataset fails before anything else
        proto = _protocol(args, dataset)
        kw = {"data_root": args.data_root, "download": args.download, "cache_dir": args.cache_dir}
        train, test = load_dataset(dataset, "train", **kw), load_dataset(dataset, "test", **kw)
        idx = random_per_class(train.labels, args.ipc, args.seed, train.num_classes)
        r = evaluate(train.subset(idx), test, proto, seed=args.seed)
        print(f"{dataset} random {args.ipc} per class: {r}")
        results.append(r)
        report["source"] = {"dataset": dataset, "ipc": args.ipc, "select": args.select, "subset_seed": args.seed}
    accs = [a for r in results for a in r.accuracies]
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
    print(f"mean {100 * mean:.2f} +- {100 * std:.2f} % over {len(accs)} evaluations")
    ran = TrainProtocol(**{**proto.as_dict(), **results[-1].protocol})  # the precision that ran (and soft loss)
    print(f"protocol: {ran.describe()}")
    report.update({"mean": mean, "std": std, "accuracies": accs, "protocol": results[-1].protocol,
                   "engine": engine_options(args).as_dict(), "runs": [r.as_dict() for r in results]})
    write_json_out(args.out, report)
    return 0


__all__ = ["add_commands"]
