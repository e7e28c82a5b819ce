"""Evaluate the published DC MNIST IPC-1 set (VICO format) across architectures under ``vico-dc``.

Every (model, experiment, run) result is written to its own JSON file under --out, so the script
resumes after a kill. Prints a Markdown table beside the accuracies recorded in the file.

    python scripts/eval_vico_mnist.py --out runs/vico_mnist --runs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from adapters.loaders import load_published
from harness.data import load_dataset
from harness.engine.protocol import create_protocol
from harness.evaluate import evaluate_set
from harness.io import atomic_write_json, versions
from harness.models import VICO_NAMES

FILE = "condensed/vico-dc/res_DC_MNIST_ConvNet_1ipc.pt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default="runs/vico_mnist")
    ap.add_argument("--runs", type=int, default=2, help="evaluations per experiment")
    ap.add_argument("--models", default="ConvNet,LeNet,MLP,AlexNet,VGG11,ResNet18")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--experiments", default=None,
                    help="experiment indices in the order to run them, e.g. 4,3 (default: all, ascending); "
                         "lets a second process share the work")
    ap.add_argument("--report-only", action="store_true", help="print the table from the results so far")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root, out = Path(args.data_root), Path(args.out)
    sets = load_published("vico", root / FILE)
    test = load_dataset("mnist", "test", data_root=root)
    names = args.models.split(",")
    all_names = "ConvNet,LeNet,MLP,AlexNet,VGG11,ResNet18".split(",")
    # runs outermost, so a partial run still covers every model and experiment once
    for r in range(0 if args.report_only else args.runs):
        for vico_name in names:
            proto = create_protocol("vico-dc", "mnist", model=VICO_NAMES[vico_name])
            order = [int(e) for e in args.experiments.split(",")] if args.experiments else range(len(sets))
            for e in order:
                cs = sets[e]
                f = out / f"{vico_name}-exp{e}-run{r}.json"
                if f.is_file():
                    continue
                res = evaluate_set(cs.to_labeled(), test, proto, runs=1, seed=1000 * e + r)
                atomic_write_json(f, {**res.as_dict(), "experiment": e, "versions": versions()})
                print(f"{vico_name} exp {e} run {r}: {100 * res.mean:.2f}%", flush=True)
    rows = []
    for vico_name in all_names:
        files = sorted(out.glob(f"{vico_name}-exp*-run*.json"))
        accs = [json.loads(f.read_text())["accuracies"][0] for f in files]
        if not accs:
            continue
        rec = sets[0].provenance["recorded_accuracies"].get(vico_name, {}).get("mean")
        rows.append((vico_name, VICO_NAMES[vico_name], 100 * statistics.fmean(accs), 100 * statistics.pstdev(accs),
                     len(accs), None if rec is None else 100 * rec))
    print("\n| model | ddbench name | ours (mean ± std) | evaluations | recorded in file | diff |")
    print("|---|---|---|---|---|---|")
    for name, ours, m, s, n, rec in rows:
        diff = "" if rec is None else f"{m - rec:+.2f}"
        print(f"| {name} | `{ours}` | {m:.2f} ± {s:.2f} | {n} | {rec:.2f} | {diff} |")
    print(f"\nprotocol: {create_protocol('vico-dc', 'mnist').describe()}")


if __name__ == "__main__":
    main()
