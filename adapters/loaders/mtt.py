"""MTT's distilled sets (Cazenavette et al., "Dataset Distillation by Matching Training
Trajectories", CVPR 2022; ``GeorgeCazenavette/mtt-distillation``).

``distill.py`` (~L229-271) saves, in one run folder, ``images_<it>.pt`` / ``images_best.pt`` (float32
``(N, C, H, W)`` in the model's input space), ``labels_<it>.pt`` / ``labels_best.pt`` (int64 ``(N,)``,
class-major) and, only with ``--zca`` (and ``ipc < 50`` or ``--force_save``), ``images_zca_<it>.pt``:
the same images mapped back to pixel space by the whitening's inverse. Some forks add ``lr_best.pt``
(the learned student learning rate, a 0-d tensor).

The input space (``utils.py get_dataset`` ~L50-160):

- without ``--zca``: ``ToTensor()`` + ``Normalize(mean, std)`` with MTT's constants; CIFAR-100 reuses
  CIFAR-10's (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010), which are recorded here (ddbench's
  cifar100 spec holds the true CIFAR-100 statistics); CIFAR-10 and Tiny/ImageNet match our specs.
- with ``--zca``: ``ToTensor()`` only, then ``kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)``
  fitted on those [0, 1] training pixels; the synthetic images live in that ZCA space and the test
  images are whitened the same way. Recorded as ``{"eps": 0.1, "fit": "pixel train", ...}`` so
  :func:`condensed.prepare.prepare_for_eval` refits it on the real training pixels.

ZCA is detected from the folder: ``images_zca_*.pt`` files exist only for ``--zca`` runs, so their
presence means ZCA (an explicit ``zca=False`` then is an error). Their absence proves nothing (a
``--zca`` run at ``ipc >= 50`` writes none, and published copies often keep only ``images_best.pt``),
so without them ``zca=True`` or ``zca=False`` must be given. ``pixel_copy=True`` imports the
``images_zca_<it>.pt`` pixel copy instead (space 'pixel'; for ``suffix='best'`` the iteration whose
``images_<it>.pt`` equals ``images_best.pt``); training on it is not MTT's ZCA protocol.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from adapters.loaders.idc import dataset_from_path
from adapters.loaders.registry import register_loader
from adapters.loaders.torchfile import load_pt
from condensed import CondensedSet
from harness.data import get_spec
from harness.errors import ConfigError, FormatError

MTT_ZCA = {"eps": 0.1, "fit": "pixel train", "impl": "kornia.enhance.ZCAWhitening",
           "source": "mtt-distillation utils.py get_dataset: ToTensor() only, ZCAWhitening(eps=0.1).fit(train)"}
CIFAR10_MTT = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
MTT_NORMALIZE = {"cifar100": CIFAR10_MTT}  # where MTT's Normalize constants differ from our spec's
DATASET_TAGS = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn", "mnist": "mnist",
                "tiny": "tinyimagenet", "tinyimagenet": "tinyimagenet"}
ZCA_COPY = re.compile(r"^images_zca_(\d+)\.pt$")


def _tensor(path: Path, what: str) -> torch.Tensor:
    t = load_pt(path)
    if not isinstance(t, torch.Tensor):
        raise FormatError(f"{path}: expected a tensor ({what}), got {type(t).__name__}")
    return t


def zca_copies(folder: Path) -> dict[int, Path]:
    """``images_zca_<it>.pt`` files of a run folder, by iteration (written only by ``--zca`` runs)."""
    found = {int(m.group(1)): p for p in folder.iterdir() if (m := ZCA_COPY.match(p.name))}
    return dict(sorted(found.items()))


def _best_iteration(folder: Path, images: torch.Tensor, copies: dict[int, Path]) -> int:
    """The iteration whose ``images_<it>.pt`` is ``images_best.pt`` (distill.py saves both from one tensor)."""
    for it in copies:
        p = folder / f"images_{it}.pt"
        if p.is_file() and torch.equal(_tensor(p, "images"), images):
            return it
    raise FormatError(f"{folder}: no images_<it>.pt equals images_best.pt among the iterations with a ZCA copy "
                      f"{list(copies)}; pass suffix=<it> to pick the iteration")


@register_loader("mtt")
def load_mtt(path: Path, *, dataset: str | None = None, zca: bool | None = None, method: str = "MTT",
             suffix: str = "best", pixel_copy: bool = False) -> list[CondensedSet]:
    """Read ``images_<suffix>.pt`` + ``labels_<suffix>.pt`` (+ ``lr_<suffix>.pt``) from a run folder.

    ``path`` is the folder or any file in it. ``zca``: None = detect from ``images_zca_*.pt`` (required
    when there are none); ``pixel_copy``: import the inverse-whitened ``images_zca_<it>.pt`` (space 'pixel').
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    img_p, lab_p, lr_p = (folder / f"{k}_{suffix}.pt" for k in ("images", "labels", "lr"))
    for p in (img_p, lab_p):
        if not p.is_file():
            raise FormatError(f"{p}: missing; an MTT run folder holds images_{suffix}.pt and labels_{suffix}.pt "
                              f"(and optionally lr_{suffix}.pt)")
    copies = zca_copies(folder)
    if copies and zca is False:
        raise FormatError(f"{folder}: holds {copies[next(iter(copies))].name} (+{len(copies) - 1} more), which "
                          "distill.py writes only with --zca, yet zca=False was given; the images are ZCA-whitened")
    if zca is None and not copies:
        raise ConfigError(f"{folder}: cannot tell whether this MTT run used --zca (no images_zca_<it>.pt, which "
                          "--zca runs write only for ipc < 50); pass zca=True or zca=False "
                          "(ddbench import: --zca or --option zca=false)")
    zca = bool(copies) or bool(zca)
    if pixel_copy and not copies:
        raise FormatError(f"{folder}: pixel_copy needs the images_zca_<it>.pt files of a --zca run; there are none")
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
    mean, std = MTT_NORMALIZE.get(dataset, (spec.mean, spec.std))
    prov: dict = {"source_format": "mtt", "source_file": img_p.name, "source_folder": folder.name,
                  "zca": ("detected: images_zca_<it>.pt present (written only by --zca runs)" if copies
                          else f"as given (zca={zca})")}
    if not zca:
        prov["normalization"] = "MTT utils.py get_dataset Normalize constants"
    if lr_p.is_file():
        lr = _tensor(lr_p, "learned lr (0-d tensor)")
        if lr.numel() != 1:
            raise FormatError(f"{lr_p}: expected one learned learning rate, got shape {tuple(lr.shape)}")
        prov["learned_lr"] = float(lr.reshape(()))
    if pixel_copy:
        if suffix != "best" and not suffix.isdigit():
            raise ConfigError(f"{folder}: pixel_copy needs suffix 'best' or an iteration number, got {suffix!r}")
        it = _best_iteration(folder, images, copies) if suffix == "best" else int(suffix)
        if it not in copies:
            raise FormatError(f"{folder / f'images_zca_{it}.pt'}: missing; ZCA copies exist for {list(copies)}")
        px = _tensor(copies[it], "inverse-whitened images (N, C, H, W) float")
        if px.shape != images.shape or not px.is_floating_point():
            raise FormatError(f"{copies[it]}: expected float images {tuple(images.shape)}, got {px.dtype} "
                              f"{tuple(px.shape)}")
        prov.update(source_file=copies[it].name, iteration=it, zca_inverse_of=img_p.name,
                    note="pixel copy of ZCA-space images (MTT trained and evaluated them in ZCA space)")
        return [CondensedSet(images=px, labels=labels, num_classes=spec.num_classes, dataset=dataset,
                             method=method, space="pixel", mean=mean, std=std, provenance=prov)]
    return [CondensedSet(images=images, labels=labels, num_classes=spec.num_classes, dataset=dataset,
                         method=method, space="zca" if zca else "normalized", mean=mean, std=std,
                         zca=dict(MTT_ZCA) if zca else None, provenance=prov)]
