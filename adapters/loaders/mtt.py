"""MTT's distilled sets (Cazenavette et al., "Dataset Distillation by Matching Training
Trajectories", CVPR 2022; ``GeorgeCazenavette/mtt-distillation``).

``distill.py`` saves, in one run folder, ``images_best.pt`` (float32 ``(N, C, H, W)``, in the
model's input space: normalized with the dataset's mean/std, and ZCA-whitened on top when run with
``--zca``), ``labels_best.pt`` (int64 ``(N,)``, class-major) and ``lr_best.pt`` (the learned
student learning rate, a 0-d tensor). ZCA in MTT is ``kornia.enhance.ZCAWhitening(eps=0.1)``
fitted on the normalized real training images, so ``zca=True`` records exactly that; evaluation
refits it (:func:`condensed.shrink.prepare_for_eval`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from adapters.loaders import register_loader
from adapters.loaders.idc import dataset_from_path
from adapters.loaders.torchfile import load_pt
from condensed import CondensedSet
from harness.data import get_spec
from harness.errors import FormatError

MTT_ZCA = {"eps": 0.1, "fit": "normalized train", "impl": "kornia.enhance.ZCAWhitening"}
DATASET_TAGS = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn", "mnist": "mnist",
                "tiny": "tinyimagenet", "tinyimagenet": "tinyimagenet"}


def _tensor(path: Path, what: str) -> torch.Tensor:
    t = load_pt(path)
    if not isinstance(t, torch.Tensor):
        raise FormatError(f"{path}: expected a tensor ({what}), got {type(t).__name__}")
    return t


@register_loader("mtt")
def load_mtt(path: Path, *, dataset: str | None = None, zca: bool = False, method: str = "MTT",
             suffix: str = "best") -> list[CondensedSet]:
    """Read ``images_<suffix>.pt`` + ``labels_<suffix>.pt`` (+ ``lr_<suffix>.pt``) from a run folder.

    ``path`` is the folder or any file in it. ``zca=True``: the images are ZCA-whitened (space 'zca').
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    img_p, lab_p, lr_p = (folder / f"{k}_{suffix}.pt" for k in ("images", "labels", "lr"))
    for p in (img_p, lab_p):
        if not p.is_file():
            raise FormatError(f"{p}: missing; an MTT run folder holds images_{suffix}.pt and labels_{suffix}.pt "
                              f"(and optionally lr_{suffix}.pt)")
    images, labels = _tensor(img_p, "images (N, C, H, W) float"), _tensor(lab_p, "labels (N,) int64")
    if images.ndim != 4 or not images.is_floating_point():
        raise FormatError(f"{img_p}: expected float images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.ndim != 1 or labels.is_floating_point() or labels.shape[0] != images.shape[0]:
        raise FormatError(f"{lab_p}: expected int64 labels ({images.shape[0]},), got {labels.dtype} "
                          f"{tuple(labels.shape)}")
    dataset = dataset or dataset_from_path(img_p, DATASET_TAGS)
    if dataset is None:
        raise FormatError(f"{img_p}: cannot tell the dataset from the path; pass dataset=")
    spec = get_spec(dataset)
    if tuple(images.shape[1:]) != spec.geometry:
        raise FormatError(f"{img_p}: images are {tuple(images.shape[1:])}, {dataset} is {spec.geometry}")
    prov: dict = {"source_format": "mtt", "source_file": img_p.name, "source_folder": folder.name}
    if lr_p.is_file():
        lr = _tensor(lr_p, "learned lr (0-d tensor)")
        if lr.numel() != 1:
            raise FormatError(f"{lr_p}: expected one learned learning rate, got shape {tuple(lr.shape)}")
        prov["learned_lr"] = float(lr.reshape(()))
    return [CondensedSet(images=images, labels=labels, num_classes=spec.num_classes, dataset=dataset,
                         method=method, space="zca" if zca else "normalized", mean=spec.mean, std=spec.std,
                         zca=dict(MTT_ZCA) if zca else None, provenance=prov)]
