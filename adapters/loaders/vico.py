"""VICO's result files (DC, DSA, DM: ``res_<method>_<dataset>_<model>_<ipc>ipc.pt``).

Structure: ``{'data': [[images (N, C, H, W) float32 normalized, labels (N,) int64], ...one per
experiment], 'accs_all_exps': {model: [accuracies in [0, 1]]}}``. Images are stored normalized
with the dataset's mean/std; the recorded accuracies are kept as provenance.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from adapters.loaders.imagefolder import check_class_counts
from adapters.loaders.registry import register_loader
from adapters.loaders.torchfile import load_pt
from condensed import CondensedSet
from harness.data import get_spec
from harness.errors import FormatError

NAME = re.compile(
    r"res_(?P<method>[A-Za-z0-9]+)_(?P<dataset>[A-Za-z0-9]+)_(?P<model>[A-Za-z0-9_]+)_(?P<ipc>\d+)ipc\.pt$")
DATASET_NAMES = {"MNIST": "mnist", "FashionMNIST": "fashionmnist", "SVHN": "svhn", "CIFAR10": "cifar10",
                 "CIFAR100": "cifar100", "TinyImageNet": "tinyimagenet"}


def parse_name(path: Path) -> dict[str, str]:
    m = NAME.search(path.name)
    return m.groupdict() if m else {}


def _integer_labels(labels: torch.Tensor, where: str) -> torch.Tensor:
    """VICO labels are 1-D class ids; float labels are accepted only when every value is whole (no truncation)."""
    if labels.ndim != 1:
        raise FormatError(f"{where}: labels of shape {tuple(labels.shape)}, expected (N,) class ids")
    if labels.is_floating_point():
        if not torch.isfinite(labels).all() or not (labels == labels.round()).all():
            raise FormatError(f"{where}: labels hold non-integer values (e.g. "
                              f"{labels[labels != labels.round()][:3].tolist()}); expected class ids")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise FormatError(f"{where}: labels of dtype {labels.dtype}, expected integer class ids")
    return labels.long()


@register_loader("vico")
def load_vico(path: Path, *, dataset: str | None = None, experiment: int | None = None) -> list[CondensedSet]:
    """All experiments of a VICO file (or only ``experiment``), each as a CondensedSet."""
    blob = load_pt(path)
    if not isinstance(blob, dict) or "data" not in blob or not isinstance(blob["data"], (list, tuple)):
        raise FormatError(f"{path}: not a VICO result file (expected a dict with 'data': "
                          "[[images, labels], ...] and 'accs_all_exps')")
    info = parse_name(path)
    dataset = dataset or DATASET_NAMES.get(info.get("dataset", ""))
    if dataset is None:
        raise FormatError(f"{path}: cannot tell the dataset from the file name; pass dataset=")
    spec = get_spec(dataset)
    experiments = list(blob["data"])
    if not experiments:
        raise FormatError(f"{path}: 'data' holds no experiment")
    chosen = range(len(experiments)) if experiment is None else [experiment]
    if experiment is not None and not 0 <= experiment < len(experiments):
        raise FormatError(f"{path}: experiment {experiment} requested, the file has {len(experiments)}")
    accs = {k: [float(a) for a in v] for k, v in dict(blob.get("accs_all_exps", {})).items()}
    out = []
    for e in chosen:
        item = experiments[e]
        if not (isinstance(item, (list, tuple)) and len(item) == 2
                and all(isinstance(t, torch.Tensor) for t in item)):
            raise FormatError(f"{path}: experiment {e} is not [images, labels]")
        images, labels = item
        if tuple(images.shape[1:]) != spec.geometry:
            raise FormatError(f"{path}: experiment {e} images are {tuple(images.shape[1:])}, "
                              f"{dataset} is {spec.geometry}")
        labels = _integer_labels(labels, f"{path}: experiment {e}")
        warnings = check_class_counts(labels, spec.num_classes, f"{path}: experiment {e}")
        prov = {"source_format": "vico", "source_file": path.name, "experiment": e,
                "experiments_in_file": len(experiments), "model": info.get("model"),
                "recorded_accuracies": {k: {"mean": sum(v) / len(v), "n": len(v)} for k, v in accs.items() if v},
                **({"warnings": warnings} if warnings else {})}
        try:
            out.append(CondensedSet(images=images, labels=labels, num_classes=spec.num_classes, dataset=dataset,
                                    method=info.get("method", "unknown"), space="normalized", mean=spec.mean,
                                    std=spec.std, provenance=prov))
        except FormatError as err:
            raise FormatError(f"{path}: experiment {e}: {err}") from None
    return out
