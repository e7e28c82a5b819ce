"""Shrink the published DC CIFAR-10 IPC-10 set (VICO ``res_DC_CIFAR10_ConvNet_10ipc.pt``) to IPC 1 and 5
with YOCO, random and EL2N (hard), evaluate each, and print a Markdown table.

Reduced CPU scale by default (say so when reporting): one dynamics run of ``--dyn-epochs`` (200)
epochs under the ``yoco`` protocol (batch 64, DSA + CutMix 0.5, lr x0.2 at 2/3, 5/6), shared by
``yoco`` and ``el2n``; LBPE stop epoch 100, top-10 (our DC/DSA default); evaluation under
``--eval-protocol`` (``vico-dc``: 300+1 epochs, no augmentation, batch 256) with ``--runs`` (3)
models per set, final-epoch accuracy on the CIFAR-10 JPEG-q75 test split (``cifar10-jpeg75``).

    python scripts/shrink_dc_cifar10.py --data-root ../shared/data --cache-dir /tmp/ddb-cache
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from adapters.loaders import load_published
from condensed.shrink import prepare_for_eval, record_runs, shrink
from harness.data import load_dataset
from harness.engine.protocol import create_protocol
from harness.evaluate import evaluate_set

SRC = "condensed/vico-dc/res_DC_CIFAR10_ConvNet_10ipc.pt"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--experiment", type=int, default=0)
    p.add_argument("--targets", type=int, nargs="+", default=[1, 5])
    p.add_argument("--rules", nargs="+", default=["yoco", "random", "el2n"])
    p.add_argument("--dyn-epochs", type=int, default=200)
    p.add_argument("--eval-protocol", default="vico-dc")
    p.add_argument("--eval-epochs", type=int, default=None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--test-per-class", type=int, default=None,
                   help="evaluate on the first N test images of each class (CPU scale; report it)")
    p.add_argument("--skip-source", action="store_true", help="do not evaluate the IPC-10 source set")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    (src,) = load_published("vico", Path(args.data_root) / SRC, experiment=args.experiment)
    test = load_dataset("cifar10-jpeg75", "test", data_root=args.data_root, cache_dir=args.cache_dir)
    if args.test_per_class:
        test = test.subset(torch.cat([torch.nonzero(test.labels == c).flatten()[: args.test_per_class]
                                      for c in range(test.num_classes)]))
    eval_proto = create_protocol(args.eval_protocol, "cifar10",
                              **({"epochs": args.eval_epochs} if args.eval_epochs else {}))
    dyn_proto = create_protocol("yoco", "cifar10", epochs=args.dyn_epochs)
    li_src, _ = prepare_for_eval(src)
    dyns, _, _ = record_runs(li_src, dyn_proto, runs=1, seed=args.seed, device=args.device)

    rows = []

    def run(name: str, ipc: str, cs) -> None:
        li, zca = prepare_for_eval(cs)
        res = evaluate_set(li, test, eval_proto, runs=args.runs, seed=args.seed + 1000, device=args.device, zca=zca)
        rows.append((name, ipc, 100 * res.mean, 100 * res.std, len(res.accuracies)))
        print(f"  {name:8s} {ipc:8s} {res}", flush=True)

    if not args.skip_source:
        run("source", "10", src)
    for k in args.targets:
        for rule in args.rules:
            small = shrink(src, k, rule=rule, dynamics=None if rule == "random" else dyns, seed=args.seed,
                           epochs=args.dyn_epochs)
            run(rule if rule != "el2n" else "el2n (hard)", f"10->{k}", small)
    proto_txt = eval_proto.describe()
    print(f"\nSource: VICO {SRC} experiment {args.experiment}; dynamics: 1 run, yoco protocol, "
          f"{args.dyn_epochs} epochs; LBPE stop 100 top-10 (capped at recorded epochs); test images: "
          f"{len(test)}.\n")
    print("| method | IPC 10->k | acc (%) mean ± std | runs | protocol |")
    print("|---|---|---|---|---|")
    for name, ipc, m, s, n in rows:
        print(f"| {name} | {ipc} | {m:.2f} ± {s:.2f} | {n} | {proto_txt} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
