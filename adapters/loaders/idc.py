"""IDC's condensed sets (Kim et al., "Dataset Condensation via Efficient Synthetic-Data
Parameterization", ICML 2022; ``snu-mllab/Efficient-Dataset-Condensation``).

``condense.py`` saves ``torch.save([data, targets], save_dir / 'data.pt')``: a Python list of
two tensors, ``data`` float32 ``(nclass * ipc, C, H, W)`` in **unnormalised pixel space**
(approximately [0, 1]; not clamped after the last update) and ``targets`` int64, class-major.
The stored images are **not decoded**: with multi-formation factor f each stored image holds f^2
images, decoded per class at load time (:func:`condensed.decode.decode_per_class`,
``CondensedSet.decoded()``). The folder name carries the factor and IPC, e.g.
``results/cifar10/conv3in_grad_mse_nd2000_cut_niter2000_factor2_lr0.005_mix_ipc10/data.pt``.

The set is kept un-decoded here (``factor`` recorded); a factor that does not divide the image
size is refused unless ``allow_pad=True`` (IDC itself pads right/bottom with 0.5 in that case).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from adapters.loaders.registry import register_loader
from adapters.loaders.torchfile import load_pt
from condensed import CondensedSet
from harness.data import get_spec, list_datasets
from harness.errors import FormatError

FACTOR_TAG = re.compile(r"(?:^|_)factor(\d+)(?:_|$)")
IPC_TAG = re.compile(r"(?:^|_)ipc(\d+)(?:_|$)")
# IDC's ``datatag`` folder names that differ from ddbench dataset names
DATASET_TAGS = {"cifar10": "cifar10", "cifar100": "cifar100", "svhn": "svhn", "mnist": "mnist",
                "fashion": "fashionmnist"}
# how far outside [0, 1] un-clamped IDC pixels may stray before the file is taken for normalised data
PIXEL_SLACK = 0.5


def dataset_from_path(path: Path, known: dict[str, str] | None = None) -> str | None:
    """The dataset named by a folder on ``path`` (IDC: ``results/<datatag>/<tag>/data.pt``)."""
    names = set(list_datasets())
    for part in reversed(path.resolve().parts[:-1]):
        low = part.lower()
        if known and low in known:
            return known[low]
        if low in names:
            return low
    return None


def parse_tag(path: Path) -> dict[str, int]:
    """``factor`` and ``ipc`` from an IDC folder tag such as ``..._factor2_..._ipc10``."""
    out: dict[str, int] = {}
    for key, pat in (("factor", FACTOR_TAG), ("ipc", IPC_TAG)):
        m = pat.search(path.parent.name)
        if m:
            out[key] = int(m.group(1))
    return out


@register_loader("idc")
def load_idc(path: Path, *, dataset: str | None = None, factor: int | None = None,
             allow_pad: bool = False, method: str = "IDC") -> list[CondensedSet]:
    """Read an IDC ``data.pt`` (or the folder holding it) into one un-decoded :class:`CondensedSet`.

    ``factor``: the multi-formation factor; parsed from the folder tag (``factor2``) when not given.
    ``dataset``: parsed from the parent folder (``results/cifar10/...``) when not given.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "data.pt"
    blob = load_pt(path)
    if not (isinstance(blob, (list, tuple)) and len(blob) == 2 and all(isinstance(t, torch.Tensor) for t in blob)):
        raise FormatError(f"{path}: not an IDC data.pt (expected a list [images (N, C, H, W) float, "
                          f"targets (N,) int64], got {type(blob).__name__})")
    images, targets = blob
    if images.ndim != 4 or not images.is_floating_point():
        raise FormatError(f"{path}: IDC images must be float (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if targets.ndim != 1 or targets.is_floating_point() or targets.shape[0] != images.shape[0]:
        raise FormatError(f"{path}: IDC targets must be int64 (N,) with N = {images.shape[0]}, "
                          f"got {targets.dtype} {tuple(targets.shape)}")
    tag = parse_tag(path)
    dataset = dataset or dataset_from_path(path, DATASET_TAGS)
    if dataset is None:
        raise FormatError(f"{path}: cannot tell the dataset from the path (expected results/<dataset>/<tag>/data.pt); "
                          "pass dataset=")
    spec = get_spec(dataset)
    if tuple(images.shape[1:]) != spec.geometry:
        raise FormatError(f"{path}: images are {tuple(images.shape[1:])}, {dataset} is {spec.geometry}")
    if factor is None:
        factor = tag.get("factor")
    if factor is None:
        raise FormatError(f"{path}: no multi-formation factor in the folder name {path.parent.name!r} "
                          "(expected a tag like '_factor2_'); pass factor= (1 for none)")
    h = images.shape[2]
    if factor < 1 or factor > h:
        raise FormatError(f"{path}: multi-formation factor {factor} must be in [1, {h}] for {h}px images")
    if h % factor and not allow_pad:
        raise FormatError(f"{path}: factor {factor} does not divide the {h}px image; IDC pads the remainder with "
                          "0.5 before cutting -- pass allow_pad=True (--allow-pad) to accept that")
    lo, hi = float(images.min()), float(images.max())
    if lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK:
        raise FormatError(f"{path}: pixel values span [{lo:.3f}, {hi:.3f}]; IDC stores unnormalised pixels in about "
                          "[0, 1] -- is this a normalised (VICO/MTT) file?")
    if "ipc" in tag and images.shape[0] != tag["ipc"] * spec.num_classes:
        raise FormatError(f"{path}: folder tag says ipc{tag['ipc']} but the file holds {images.shape[0]} images "
                          f"for {spec.num_classes} classes")
    prov = {"source_format": "idc", "source_file": str(path.name), "source_folder": path.parent.name,
            "stored_unnormalised": True, "pixel_range": [lo, hi], "padded_decode": bool(h % factor)}
    cs = CondensedSet(images=images, labels=targets, num_classes=spec.num_classes, dataset=dataset, method=method,
                      space="pixel", mean=spec.mean, std=spec.std, factor=int(factor), provenance=prov)
    return [cs]
