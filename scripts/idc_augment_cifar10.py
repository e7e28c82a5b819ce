"""Issue 11 item 2: the published DC CIFAR-10 IPC-10 set under the ``idc`` protocol, IDC DiffAug vs VICO DSA.

Trains ``--runs`` ConvNets (seeds 0, 1, ...) on ``condensed/vico-dc/res_DC_CIFAR10_ConvNet_10ipc.pt`` under
``create_protocol("idc", "cifar10-jpeg75", epochs=...)`` (batch 64, multistep x0.2 at 2/3 and 5/6, CutMix p 0.5,
fp32, final-epoch accuracy) once per augmentation (``augment=idc``: the preset's IDC ``DiffAug(batch=False)``;
``augment=dsa``: VICO's DSA mode S, the former default), and scores every trained model on two fixed
2,000-image subsets of the cifar10-jpeg75 test split:

- ``per-class``: files ``0000.jpg`` .. ``0199.jpg`` of each class folder (the first 200 of every class in
  the official order; 10 classes);
- ``first``: the first 2,000 images in the loader's order (class folder, then file name), i.e. ``airplane``
  and ``automobile`` ``0000.jpg`` .. ``0999.jpg`` (2 classes; scored with all 10 logits).

    DDBENCH_DATA=/work/shared/data python scripts/idc_augment_cifar10.py --epochs 300 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from adapters.loaders import load_published
from harness.data import load_dataset
from harness.engine.protocol import create_protocol
from harness.engine.trainer import Trainer, accuracy, seeded_model
from harness.evaluate import model_inputs
from harness.models import create_model

FILE = "condensed/vico-dc/res_DC_CIFAR10_ConvNet_10ipc.pt"
DATASET = "cifar10-jpeg75"


def test_subsets(labels: torch.Tensor, per_class: int = 200, first: int = 2000) -> dict[str, torch.Tensor]:
    """Indices of the two test subsets (the loader orders by class, then file name = rank in the class)."""
    per = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(int(labels.max()) + 1)])
    return {"per-class": per, "first": torch.arange(first)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("DDBENCH_DATA", "/work/shared/data"))
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--augments", default="idc,dsa", help="Protocol.augment values to compare")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the per-run accuracies as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data_root)
    (cs,) = load_published("vico", root / FILE, dataset=DATASET)
    train = cs.to_labeled()
    test = load_dataset(DATASET, "test", data_root=root)
    x_train, x_test = model_inputs(train, test)
    subsets = test_subsets(test.labels)
    results: dict[str, dict] = {}
    for aug in args.augments.split(","):
        p = create_protocol("idc", DATASET, epochs=args.epochs, augment=aug, precision="fp32")
        accs: dict[str, list[float]] = {k: [] for k in subsets}
        t0 = time.perf_counter()
        for s in range(args.runs):
            model = seeded_model(lambda p=p: create_model(p.model, num_classes=train.num_classes,
                                                          in_chans=train.channels, img_size=train.size), s)
            Trainer(model, p, seed=s).fit(x_train, train.labels)
            for name, idx in subsets.items():
                accs[name].append(accuracy(model, x_test[idx], test.labels[idx], p.test_batch))
            print(f"{aug} seed {s}: " + ", ".join(f"{k} {100 * v[-1]:.2f}%" for k, v in accs.items()), flush=True)
        secs = (time.perf_counter() - t0) / args.runs
        results[aug] = {"protocol": p.describe(), "seeds": list(range(args.runs)), "accuracies": accs,
                        "train_seconds_per_run": secs}
    print(f"\n{len(train)} training images; {args.runs} runs; test subsets of 2,000 images\n")
    print("| augmentation | per-class 2,000 (200/class) | first 2,000 (airplane+automobile) | s/run |")
    print("|---|---|---|---|")
    for aug, r in results.items():
        cells = [f"{100 * statistics.fmean(v):.2f} ± {100 * statistics.stdev(v):.2f}" if len(v) > 1
                 else f"{100 * v[0]:.2f}" for v in r["accuracies"].values()]
        print(f"| `{aug}` | {' | '.join(cells)} | {r['train_seconds_per_run']:.0f} |")
    for aug, r in results.items():
        print(f"{aug}: {r['protocol']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
