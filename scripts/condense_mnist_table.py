"""MNIST IPC 10: DM and DC (reduced iterations) vs random real images, with GoldFromOres pre-pruning.

Every row is evaluated with the same protocol: VICO's DC protocol for MNIST (ConvNet-3, SGD 0.01/0.9/5e-4,
DC augmentation crop_scale_rotate, lr x0.1 at the half) with ``--eval-epochs`` epochs (+1, as VICO),
``--runs`` models per row, final-epoch accuracy on the MNIST test split. Prints a Markdown table.

    python scripts/condense_mnist_table.py --data-root /work/shared/data --device cuda
"""

from __future__ import annotations

import argparse
import time

from adapters.condense import PrePrune, create_condenser
from harness.data import load_dataset
from harness.engine.protocol import create_protocol
from harness.evaluate import evaluate_set, random_per_class


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/work/shared/data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--dm-iterations", type=int, default=1000)
    ap.add_argument("--dc-iterations", type=int, default=50)
    ap.add_argument("--eval-epochs", type=int, default=300)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--drop-ratio", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score-cache", default=None)
    ap.add_argument("--loss-converge", action="store_true", help="also a LossConverge_large row (5 epochs)")
    ap.add_argument("--batch-real", type=int, default=256, help="real images per class per matching step")
    ap.add_argument("--dc-init", default="noise", choices=["real", "noise"], help="DC init (reference: noise)")
    ap.add_argument("--loss-model", default="convnet", help="model that records GoldFromOres losses")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    loss_params = {"model": args.loss_model}

    train = load_dataset("mnist", "train", data_root=args.data_root)
    test = load_dataset("mnist", "test", data_root=args.data_root)
    proto = create_protocol("vico-dc", "mnist").with_(epochs=args.eval_epochs)
    rows = []

    def evaluate(name: str, pre: str, iters: str, labeled, secs: float) -> None:
        t = time.perf_counter()
        res = evaluate_set(labeled, test, proto, runs=args.runs, seed=1000, device=args.device)
        rows.append((name, pre, iters, f"{100 * res.mean:.2f} ± {100 * res.std:.2f}", f"{secs:.0f}",
                     f"{time.perf_counter() - t:.0f}"))
        print(rows[-1], flush=True)

    evaluate("random real", "-", "-", train.subset(random_per_class(train.labels, args.ipc, args.seed, 10)), 0.0)
    runs = [("dm", args.dm_iterations, None),
            ("dc", args.dc_iterations, None),
            ("dm", args.dm_iterations, PrePrune("LossInit_large", drop_ratio=args.drop_ratio, seed=args.seed,
                                                      params=loss_params)),
            ("dm", args.dm_iterations, PrePrune("Random", drop_ratio=args.drop_ratio, seed=args.seed))]
    if args.loss_converge:
        runs.append(("dm", args.dm_iterations, PrePrune("LossConverge_large", drop_ratio=args.drop_ratio,
                                                        seed=args.seed, params={"epochs": 5, **loss_params})))
    for method, iters, pre in runs:
        cond = create_condenser(method)
        t = time.perf_counter()
        extra = {"init": args.dc_init} if method == "dc" else {}
        cfg = cond.default_config(iterations=iters, batch_real=args.batch_real, **extra)
        cs = cond.condense(train, args.ipc, cfg, pre_prune=pre, seed=args.seed,
                           device=args.device, score_cache=args.score_cache)
        secs = time.perf_counter() - t
        evaluate(method.upper(), f"{pre.criterion} drop {pre.drop_fraction}" if pre else "-", str(iters),
                 cs.to_labeled(), secs)

    print(f"\nMNIST, IPC {args.ipc}; protocol: {proto.describe()}; {args.runs} runs per row; device {args.device}; "
          f"batch_real {args.batch_real}; DC init {args.dc_init}; GoldFromOres loss model {args.loss_model}\n")
    print("| set | pre-prune | iterations | test acc % (mean ± std) | condense s | eval s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
