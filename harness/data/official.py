"""Where each training sample of our datasets sits in the dataset's *official* order.

Per-sample files published by other projects (the GoldFromOres authors' scores, for one) are indexed
by the official torchvision training-set index. :func:`official_index` returns, for a training split
as our loader returns it, ``src`` with ``src[j]`` = the official index of our sample ``j``; a
published array ``a`` (official order) is then ``a[src]`` in our order.

How each loader's order relates to the official one (checked against ``harness/data/formats.py``):

- ``mnist``, ``fashionmnist``: torchvision's ``MNIST(...).data`` in idx-file order -> identity.
- ``cifar10``, ``cifar100``: the pickles ``data_batch_1..5`` / ``train`` concatenated in file order,
  as torchvision's ``CIFAR10``/``CIFAR100`` do -> identity.
- ``svhn``: ``train_32x32.mat`` in file order, as torchvision's ``SVHN`` -> identity.
- ``cifar10-jpeg75``: class-major image folder, ``train/<class>/NNNN.jpg`` where NNNN is the image's
  rank within its class in the official order; class folders sort into the official class ids
  (airplane .. truck) and file names sort by rank. Official index i is therefore our sample
  ``offset[label_i] + rank of i among its class``, which needs the official labels: the file
  ``<root>/goldfromores/cifar10_train_labels_official_order.npy`` (or the official CIFAR-10 pickles
  under ``<root>/cifar-10-batches-py``).
- ``tinyimagenet``: refused. Our loader reads the official folder layout (sorted wnids, then sorted
  file names, which is also torchvision ``ImageFolder``'s order), but the VICO code the GoldFromOres
  authors build on has no torchvision Tiny-ImageNet: it loads a pre-built ``tinyimagenet.pt``
  (DatasetCondensation ``utils.py`` ``get_dataset``) whose construction was never published, so the
  order of their 100,000 scores cannot be matched to our images.

Every other dataset has no known official order and is refused with a message naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.data.specs import get_spec, resolve_root
from harness.errors import ConfigError, DatasetNotFoundError, FormatError
from harness.registry import Registry

C10_LABEL_FILE = "goldfromores/cifar10_train_labels_official_order.npy"


@dataclass(frozen=True)
class OfficialOrder:
    """How one of our datasets' train split maps onto the official training order of ``official``."""

    dataset: str  # our registry name
    official: str  # the dataset's official (torchvision / VICO) name, e.g. "CIFAR10"
    how: str  # one line for provenance
    index: Callable[[np.ndarray, Path | None], np.ndarray] | None = field(default=None, compare=False, repr=False)
    refused: str = ""  # why no mapping can be given (then ``index`` is None)


ORDERS: Registry[OfficialOrder] = Registry("official order")


def register_order(order: OfficialOrder) -> OfficialOrder:
    return ORDERS.register(order.dataset, order)


def get_order(dataset: str) -> OfficialOrder:
    if dataset not in ORDERS:
        raise ConfigError(f"dataset {dataset!r}: its training order is not known to match any official order "
                          f"(known: {', '.join(ORDERS.names())})")
    return ORDERS.get(dataset)


def official_index(dataset: str, labels: np.ndarray, data_root: str | Path | None = None) -> np.ndarray:
    """``src`` (int64, a permutation of ``0..N-1``): ``src[j]`` is the official index of our training sample ``j``.

    ``labels`` are our train split's labels (length checked by the mapping where it needs them).
    """
    order = get_order(dataset)
    if order.index is None:
        raise ConfigError(f"dataset {dataset!r}: {order.refused}")
    labels = np.asarray(labels, dtype=np.int64)
    src = np.asarray(order.index(labels, None if data_root is None else Path(data_root)), dtype=np.int64)
    if src.shape != labels.shape or not np.array_equal(np.sort(src), np.arange(labels.size)):
        raise FormatError(f"dataset {dataset!r}: the official-order mapping is not a permutation of {labels.size}")
    return src


def _identity(labels: np.ndarray, root: Path | None) -> np.ndarray:
    return np.arange(labels.size, dtype=np.int64)


def per_class_rank(ours: np.ndarray, official: np.ndarray) -> np.ndarray:
    """``src`` for a class-major copy whose samples keep, within each class, the official relative order:
    the k-th sample of class c in our order is the k-th sample of class c in the official order."""
    ours, official = np.asarray(ours, np.int64), np.asarray(official, np.int64)
    if ours.shape != official.shape:
        raise FormatError(f"{ours.size} samples in our split but {official.size} official labels")
    nc = int(max(ours.max(initial=0), official.max(initial=0))) + 1
    mine, theirs = np.bincount(ours, minlength=nc), np.bincount(official, minlength=nc)
    if not np.array_equal(mine, theirs):
        raise FormatError(f"class sizes differ from the official ones ({mine.tolist()} vs {theirs.tolist()})")
    src = np.empty(ours.size, dtype=np.int64)
    for c in range(nc):
        src[np.flatnonzero(ours == c)] = np.flatnonzero(official == c)
    return src


def cifar10_official_labels(root: Path | None) -> np.ndarray:
    """The 50,000 CIFAR-10 training labels in the official order: the label file, else the official pickles."""
    if root is None:

        root = resolve_root(None)
    f = root / C10_LABEL_FILE
    if f.is_file():
        try:
            return np.load(f, allow_pickle=False).astype(np.int64).reshape(-1)
        except (OSError, ValueError) as e:
            raise FormatError(f"{f}: not a readable (50000,) int .npy of labels ({e})") from None
    if (root / "cifar-10-batches-py" / "data_batch_1").is_file():

        return get_spec("cifar10").reader(root, "train", False)[1].numpy()
    raise DatasetNotFoundError(f"{f}: not found (nor {root / 'cifar-10-batches-py'}); the official CIFAR-10 "
                               "training labels are needed to map cifar10-jpeg75 onto the official order")


def _cifar10_jpeg(labels: np.ndarray, root: Path | None) -> np.ndarray:
    return per_class_rank(labels, cifar10_official_labels(root))


for _name, _official in (("mnist", "MNIST"), ("fashionmnist", "FashionMNIST"), ("svhn", "SVHN"),
                         ("cifar10", "CIFAR10"), ("cifar100", "CIFAR100")):
    register_order(OfficialOrder(_name, _official, "identity: our loader reads the torchvision files in file order",
                                 _identity))
register_order(OfficialOrder(
    "cifar10-jpeg75", "CIFAR10", "per-class rank: official index i is train/<label>/<rank of i in its class>.jpg, "
    "labels from " + C10_LABEL_FILE, _cifar10_jpeg))
register_order(OfficialOrder(
    "tinyimagenet", "TinyImageNet", "", None,
    refused="the GoldFromOres/VICO TinyImageNet order is that of VICO's pre-built tinyimagenet.pt, whose "
            "construction was never published, so it cannot be matched to our images; give scores in our "
            "order (sorted wnids, then sorted file names) instead"))
