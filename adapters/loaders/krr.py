"""Kernel-ridge-regression style sets (KIP: Nguyen et al., ICLR 2021 / NeurIPS 2021; also FRePo,
RFAD exports) saved as ``.npz``.

Keys: ``images`` float, in **ZCA space** (normalized, then ZCA-whitened; KIP's
``neural_tangents`` pipeline stores NHWC, re-exports often NCHW -- the layout is detected from
the dataset's geometry and refused when it matches neither), and ``labels`` the **learned label
vectors** ``(N, K)`` (KIP learns them as regression targets, so they may be negative and need
not sum to 1). They become ``soft_labels``; the hard labels are their argmax. A label width
other than the dataset's class count is an error.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from adapters.loaders import register_loader
from adapters.loaders.idc import dataset_from_path
from condensed import CondensedSet
from harness.data import get_spec
from harness.errors import FormatError

KRR_ZCA = {"eps": 0.1, "fit": "normalized train", "impl": "kornia.enhance.ZCAWhitening"}


def to_nchw(x: np.ndarray, geometry: tuple[int, int, int], where: str) -> np.ndarray:
    """Images as NCHW, from NCHW or NHWC, checked against ``geometry`` = (C, H, W)."""
    c, h, w = geometry
    if x.ndim != 4:
        raise FormatError(f"{where}: images must be 4-D (NCHW or NHWC), got shape {x.shape}")
    if tuple(x.shape[1:]) == (c, h, w):
        return x
    if tuple(x.shape[1:]) == (h, w, c):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise FormatError(f"{where}: images of shape {x.shape} match neither NCHW (N, {c}, {h}, {w}) nor "
                      f"NHWC (N, {h}, {w}, {c})")


@register_loader("krr")
def load_krr(path: Path, *, dataset: str | None = None, zca: bool = True, method: str = "KIP",
             images_key: str = "images", labels_key: str = "labels") -> list[CondensedSet]:
    """Read a ``.npz`` with ZCA-space ``images`` and learned ``labels`` (N, K) into a soft-label set."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {images_key, labels_key} - keys
            if missing:
                raise FormatError(f"{path}: missing arrays {sorted(missing)} (has {sorted(keys)}); expected "
                                  f"'{images_key}' (N, C, H, W)|(N, H, W, C) and '{labels_key}' (N, K)")
            x, lab = z[images_key], z[labels_key]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npz file ({e})") from None
    dataset = dataset or dataset_from_path(path)
    if dataset is None:
        raise FormatError(f"{path}: cannot tell the dataset from the path; pass dataset=")
    spec = get_spec(dataset)
    if not np.issubdtype(x.dtype, np.floating):
        raise FormatError(f"{path}: '{images_key}' must be float (ZCA space), got {x.dtype}")
    layout = "NCHW" if tuple(x.shape[1:]) == spec.geometry else "NHWC"
    x = to_nchw(x, spec.geometry, f"{path}:{images_key}")
    if lab.ndim != 2 or lab.shape[0] != x.shape[0]:
        raise FormatError(f"{path}: '{labels_key}' must be learned label vectors ({x.shape[0]}, K), "
                          f"got shape {lab.shape}")
    if lab.shape[1] != spec.num_classes:
        raise FormatError(f"{path}: soft labels have width {lab.shape[1]}, {dataset} has {spec.num_classes} classes")
    soft = torch.from_numpy(np.asarray(lab, dtype=np.float32))
    prov = {"source_format": "krr", "source_file": path.name, "layout": layout,
            "label_semantics": "learned label vectors (KRR regression targets); hard label = argmax"}
    return [CondensedSet(images=torch.from_numpy(np.asarray(x, dtype=np.float32)), labels=soft.argmax(1),
                         num_classes=spec.num_classes, dataset=dataset, method=method,
                         space="zca" if zca else "normalized", mean=spec.mean, std=spec.std,
                         soft_labels=soft, zca=dict(KRR_ZCA) if zca else None, provenance=prov)]
