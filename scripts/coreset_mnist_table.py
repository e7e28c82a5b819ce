"""Coreset baselines on real MNIST at a reduced CPU scale: random, EL2N, forgetting, CCS and DUAL at
50% and 90% pruning. One dynamics run serves every recipe (cached under --workdir, so a re-run
resumes). Prints a Markdown table with the scale it ran at.

    python scripts/coreset_mnist_table.py --workdir runs/coreset_mnist
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from harness.pruning.coreset import run_coreset
from harness.pruning.select import Budget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--workdir", default="runs/coreset_mnist")
    ap.add_argument("--model", default="dc_lenet")
    ap.add_argument("--epochs-dynamics", type=int, default=10)
    ap.add_argument("--epochs-train", type=int, default=10)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipes = {"random": {}, "el2n": {}, "forgetting": {}, "ccs": {},
               "dual": {"score_params": {"T": args.epochs_dynamics, "J": 5}}}
    overrides = {"lr": 0.05}
    rows = []
    for rate in (0.5, 0.9):
        for name, extra in recipes.items():
            rep = run_coreset("mnist", name, Budget.prune_rate(rate), data_root=args.data_root, workdir=args.workdir,
                              model=args.model, epochs_dynamics=args.epochs_dynamics, epochs_train=args.epochs_train,
                              runs=args.runs, dynamics_overrides=overrides, train_overrides=overrides,
                              protocol_dynamics="ccs", protocol_train="ccs", **extra,
                              progress=lambda m: print(m, flush=True))
            accs = rep["accuracies"]
            rows.append((rate, name, rep["n_kept"], 100 * statistics.fmean(accs), 100 * statistics.pstdev(accs),
                         len(accs)))
            print(f"{name} prune {rate}: {rows[-1][3]:.2f}", flush=True)
    print("\n| pruning rate | recipe | kept | test accuracy (mean ± std) | runs |\n|---|---|---|---|---|")
    for rate, name, kept, m, s, n in rows:
        print(f"| {int(rate * 100)}% | {name} | {kept} | {m:.2f} ± {s:.2f} | {n} |")
    print(f"\ndynamics: {rep['protocol_dynamics']}\ntrain: {rep['protocol_train']}")


if __name__ == "__main__":
    main()
