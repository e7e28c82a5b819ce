"""Kernel-ridge-regression sets (KIP: Nguyen et al., ICLR 2021 / NeurIPS 2021; also FRePo, RFAD
exports) saved as ``.npz`` with ``images`` and ``labels``.

The file does not say which method made it, so ``method`` is required (``ddbench import krr ...
--method KIP``): it names the table row and picks method defaults downstream (YOCO's LBPE epochs).

Images: KIP's released sets (google-research ``kip/dataset.ipynb``) come whitened (``zca`` in the file
name) or not (``nozca``); ``zca`` defaults to what the name says and must be given otherwise. Layout
NHWC (KIP stores NHWC) or NCHW, detected from the dataset's geometry and refused when it matches neither.

- ``zca``: KIP's ``zca_normalize`` (``kip/nn_training.ipynb`` ``apply_preprocess``): per-channel
  standardization with the training split's own mean/std, per-image layer norm, then a whitening
  regularised by ``zca_reg * tr(Sigma) / D`` (0.1) -- not kornia's ZCA; recorded with ``impl: kip``
  and refitted by :func:`condensed.prepare.prepare_for_eval` (:class:`harness.augment.ZCA`, kind
  'kip'). The notebook fits it on the first 45,000 CIFAR training images (5,000 held out for
  validation); we fit it on the whole training split.
- ``nozca``: standardized with the training split's own per-channel mean/std (population std); for
  CIFAR-10 that is std (0.2470, 0.2435, 0.2616), not the (0.2023, 0.1994, 0.2010) of our spec.

Labels ``(N, K)`` are read for what they are (within ``atol``):

- every row ``onehot(y)``: hard labels;
- every row ``onehot(y) - 1/K``: KIP's fixed centred one-hot regression targets (sets distilled
  without label learning, ``nol``, and every set at checkpoint 0), not learned: imported as the hard
  labels ``y`` (the rows carry nothing more); the centring is recorded in the provenance;
- anything else: learned label vectors, KRR regression targets (any sign, rows need not sum to 1):
  kept as ``soft_labels`` with ``soft_label_loss: mse`` so :func:`harness.evaluate.loss_for` trains on
  them with MSE, as KIP's own finite-network transfer does (``nn_training.ipynb``: ``loss_type='mse'``
  on the stored labels; its ``'xent'`` mode trains CE on their argmax, as YOCO does with KIP sets --
  drop the soft labels, e.g. a bench cell's ``hard_label``, for that). Soft CE on them is refused.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from adapters.loaders.idc import dataset_from_path
from adapters.loaders.registry import register_loader
from condensed import CondensedSet
from harness.data import get_spec
from harness.errors import ConfigError, FormatError

KIP_ZCA = {"impl": "kip", "eps": 0.1, "fit": "pixel train", "eps_scale": "trace(cov)/D", "layer_norm": True,
           "source": "google-research kip/nn_training.ipynb zca_normalize (zca_reg 0.1)"}
# the training split's own statistics where our spec's constants differ (KIP standardizes with them)
KIP_TRAIN_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))}
LABEL_SEMANTICS = {
    "hard": "hard labels (plain one-hot rows)",
    "centred": "fixed centred one-hot regression targets (not learned): rows onehot(y) - 1/K; imported as y",
    "learned": "learned label vectors (KRR regression targets, not probabilities); trained with MSE; "
               "hard label = argmax",
}


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


def classify_labels(lab: np.ndarray, atol: float = 1e-5) -> str:
    """'hard' (every row one-hot), 'centred' (every row one-hot - 1/K) or 'learned', for ``lab`` (N, K)."""
    k = lab.shape[1]
    onehot = np.eye(k)[np.argmax(lab, axis=1)]
    lab = lab.astype(np.float64)
    if np.allclose(lab, onehot, rtol=0, atol=atol):
        return "hard"
    if k > 1 and np.allclose(lab, onehot - 1.0 / k, rtol=0, atol=atol):
        return "centred"
    return "learned"


def name_flags(path: Path) -> dict[str, bool]:
    """What a KIP file name says: ``zca``/``nozca`` and ``l``/``nol`` (label learning) tokens."""
    tokens = set(re.split(r"[^a-z0-9]+", path.stem.lower()))
    flags = {}
    for key, yes, no in (("zca", "zca", "nozca"), ("label_learning", "l", "nol")):
        if yes in tokens or no in tokens:
            flags[key] = yes in tokens
    return flags


@register_loader("krr")
def load_krr(path: Path, *, dataset: str | None = None, method: str | None = None, zca: bool | None = None,
             zca_reg: float = 0.1, images_key: str = "images", labels_key: str = "labels",
             atol: float = 1e-5) -> list[CondensedSet]:
    """Read a ``.npz`` of ``images`` and ``labels`` (N, K) (or (N,) class indices) made by ``method``."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    if not method:
        raise ConfigError(f"{path}: pass method= (ddbench import --method KIP|FRePo|RFAD|...): a KRR .npz does "
                          "not record which method made it")
    flags = name_flags(path)
    if zca is None:
        if "zca" not in flags:
            raise ConfigError(f"{path}: the file name says neither 'zca' nor 'nozca'; pass zca=True or zca=False "
                              "(ddbench import: --zca or --option zca=false)")
        zca = flags["zca"]
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
        raise FormatError(f"{path}: '{images_key}' must be float (standardized or ZCA space), got {x.dtype}")
    layout = "NCHW" if tuple(x.shape[1:]) == spec.geometry else "NHWC"
    x = to_nchw(x, spec.geometry, f"{path}:{images_key}")
    if lab.ndim == 1 and np.issubdtype(lab.dtype, np.integer):  # class indices
        if lab.size and (lab.min() < 0 or lab.max() >= spec.num_classes):
            raise FormatError(f"{path}: class indices span [{lab.min()}, {lab.max()}], {dataset} has "
                              f"{spec.num_classes} classes")
        lab = np.eye(spec.num_classes, dtype=np.float32)[lab]
    if lab.ndim != 2 or lab.shape[0] != x.shape[0]:
        raise FormatError(f"{path}: '{labels_key}' must be label vectors ({x.shape[0]}, K) or class indices "
                          f"({x.shape[0]},), got shape {lab.shape}")
    if lab.shape[1] != spec.num_classes:
        raise FormatError(f"{path}: label vectors have width {lab.shape[1]}, {dataset} has {spec.num_classes} "
                          "classes")
    if not np.isfinite(lab).all():
        raise FormatError(f"{path}: '{labels_key}' holds NaN or infinite values")
    kind = classify_labels(lab, atol)
    if kind == "learned" and flags.get("label_learning") is False:
        raise FormatError(f"{path}: the name says 'nol' (no label learning) but the label rows are neither one-hot "
                          "nor centred one-hot")
    hard = torch.from_numpy(np.argmax(lab, axis=1))
    soft = torch.from_numpy(np.asarray(lab, dtype=np.float32)) if kind == "learned" else None
    prov: dict = {"source_format": "krr", "source_file": path.name, "layout": layout,
                  "label_semantics": LABEL_SEMANTICS[kind], "file_name_says": flags}
    if kind == "centred":
        prov["regression_targets"] = f"onehot - 1/{spec.num_classes}"
    if kind == "learned":
        prov["soft_label_loss"] = "mse"
    mean, std = KIP_TRAIN_STATS.get(dataset, (spec.mean, spec.std))
    if not zca:
        prov["normalization"] = "training split's own per-channel mean/std (KIP standard preprocessing)"
    return [CondensedSet(images=torch.from_numpy(np.asarray(x, dtype=np.float32)), labels=hard,
                         num_classes=spec.num_classes, dataset=dataset, method=method,
                         space="zca" if zca else "normalized", mean=mean, std=std, soft_labels=soft,
                         zca={**KIP_ZCA, "eps": float(zca_reg)} if zca else None, provenance=prov)]
