"""How well our GoldFromOres criteria agree with the authors' released scores (README figures).

1. MNIST (60,000 training images): our ``LossConverge`` (the eval-mode loss of a ConvNet trained ``epochs``
   epochs, the criterion's default) vs ``MNIST_LossConverge.json``; also the eval-mode loss after each
   ``--eval-after`` epoch and the training-time losses of the same run, for comparison.
2. CIFAR-10 (the JPEG copy ``cifar10-jpeg75``, 50,000): our ``LossInit`` (mean training-time loss over the
   first 2 epochs, the default) vs ``CIFAR10_LossInit.json`` mapped onto our order; also 1..``--cifar-epochs``.
3. With ``--cifar-converge`` (about 12 more CPU minutes at width 32): ``LossConverge`` on the JPEG copy vs
   ``CIFAR10_LossConverge.json``, with eval passes after ``--cifar-eval-after`` epochs.

Agreement: Spearman's rank correlation over all samples, and the overlap of the dropped half
(per class, drop ratio 0.5, ``_large``): |ours ∩ theirs| / |theirs|. One seeded run each; the only
departure from the criteria's defaults is ``--width`` (ConvNet width; default 128) to fit a CPU.

    python scripts/goldfromores_agreement.py --data-root /work/shared/data --threads 1 --width 32
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.stats import spearmanr

from adapters.condense.goldfromores import DEFAULT_PARAMS
from harness.data import load_dataset
from harness.pruning.goldfromores import LossRun, authors_scores, drop_per_class, record_loss_run
from harness.pruning.scores import compute_score


def agreement(ours: np.ndarray, theirs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    a = set(drop_per_class(ours, labels, num_classes, 0.5, "large").tolist())
    b = set(drop_per_class(theirs, labels, num_classes, 0.5, "large").tolist())
    return {"spearman": float(spearmanr(ours, theirs).statistic), "overlap": len(a & b) / len(b),
            "median": float(np.median(ours)), "mean": float(ours.mean()), "min": float(ours.min()),
            "max": float(ours.max())}


def run(crit: str, dataset: str, epochs: int, width: int, seed: int, root: str, device: str, rows: list,
        eval_after: tuple[int, ...] = ()) -> None:
    t0 = time.perf_counter()
    data = load_dataset(dataset, "train", data_root=root)
    labels, nc = data.labels.numpy(), data.num_classes
    theirs, info = authors_scores(dataset, crit, labels, root)
    d = DEFAULT_PARAMS[crit]
    lr = LossRun(epochs=epochs, model=d["model"], model_kwargs={**d["model_kwargs"], "width": width},
                 batch_size=d["batch_size"], lr=d["lr"])
    res = record_loss_run(data, lr, seed=seed, device=device, evaluate=crit == "LossConverge", eval_after=eval_after)
    secs = time.perf_counter() - t0
    base = {"criterion": crit, "dataset": dataset, "authors_file": info["file"], "authors_md5": info["md5"],
            "model": f"{lr.model} width {width}", "seed": seed, "seconds": round(secs)}

    def add(what: str, ours: np.ndarray, default: bool = False) -> None:
        rows.append({**base, "ours": what, "default": default, **agreement(ours, theirs, labels, nc)})
        print(json.dumps(rows[-1]), flush=True)

    loss = res.dynamics.stat("loss")
    if crit == "LossConverge":
        add(f"eval-mode loss after {epochs} epochs (LossConverge default)",
            compute_score("loss_converge", res.final), True)
        for e, ev in sorted(res.evals.items()):
            add(f"eval-mode loss after {e} epochs", compute_score("loss_converge", ev))
        for e in range(1, epochs + 1):
            add(f"training-time loss of epoch {e}", np.asarray(loss[e - 1], np.float64))
    else:
        default = int(DEFAULT_PARAMS["LossInit"]["epochs"])
        for e in range(1, epochs + 1):
            add(f"mean training-time loss of epochs 1..{e}" + (" (LossInit default)" if e == default else ""),
                compute_score("loss_init", res.dynamics, epochs=e), e == default)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="/work/shared/data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--width", type=int, default=128, help="ConvNet width (the criteria's default model: 128)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-after", default="1,3", help="extra eval passes of the MNIST run, after these epochs")
    ap.add_argument("--cifar-epochs", type=int, default=3, help="LossInit over 1..N epochs (default 2 is reported)")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--cifar-converge", action="store_true", help="also LossConverge on cifar10-jpeg75")
    ap.add_argument("--cifar-eval-after", default="1,2,4,8")
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows: list[dict] = []
    extra = tuple(int(e) for e in args.eval_after.split(",") if e.strip())
    run("LossConverge", "mnist", int(DEFAULT_PARAMS["LossConverge"]["epochs"]), args.width, args.seed,
        args.data_root, args.device, rows, extra)
    if not args.skip_cifar:
        run("LossInit", "cifar10-jpeg75", max(args.cifar_epochs, int(DEFAULT_PARAMS["LossInit"]["epochs"])),
            args.width, args.seed, args.data_root, args.device, rows)
    if args.cifar_converge:
        run("LossConverge", "cifar10-jpeg75", int(DEFAULT_PARAMS["LossConverge"]["epochs"]), args.width, args.seed,
            args.data_root, args.device, rows, tuple(int(e) for e in args.cifar_eval_after.split(",") if e.strip()))
    print("\n| criterion | data | ours | Spearman | dropped-half overlap | median (ours) |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['criterion']} | {r['dataset']} | {r['ours']} | {r['spearman']:.3f} | {r['overlap']:.3f} "
              f"| {r['median']:.3g} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
