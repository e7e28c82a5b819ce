"""``CondensedSet``: synthetic images plus everything needed to evaluate them correctly.

On disk a set is one directory with ``images.safetensors`` (``images`` float32 (N, C, H, W),
``labels`` int64 (N,), optional ``soft_labels`` float32 (N, K)) and ``meta.json``::

    {"format": "ddbench.condensed/1", "dataset": "cifar10", "method": "DC", "ipc": 10,
     "factor": 1, "space": "normalized", "mean": [...], "std": [...], "zca": null | {"eps": 0.1, "fit": "..."},
     "num_classes": 10, "class_counts": [...], "label_kind": "hard" | "soft",
     "provenance": {...}, "checksum": "sha256 of the tensors"}

``ipc`` is the set's storage budget in images per class: the explicit ``ipc_budget`` when one is
set (a set shrunk to IPC 1 from an IDC set stores 4 decoded images per class; an imbalanced rule keeps
unequal counts), else the largest class count; ``class_counts`` gives the per-class counts. Sets
written before ``ipc_budget`` existed load with ``ipc`` = the largest count, as before. ``factor`` > 1
means each stored image holds factor^2 images (IDC multi-formation), decoded by
:meth:`CondensedSet.decoded`. Both files are written to
a temporary directory and renamed into place, so a crash never leaves a half-written set.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from condensed.decode import decode_per_class
from harness.data.images import SPACES, LabeledImages
from harness.errors import FormatError
from harness.io import atomic_dir, check_output_dir, holds_only, read_meta_json

FORMAT = "ddbench.condensed/1"


@dataclass
class CondensedSet:
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    dataset: str
    method: str
    space: str = "normalized"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    factor: int = 1
    soft_labels: torch.Tensor | None = None
    zca: dict[str, Any] | None = None  # how to redo the whitening: {"eps": 0.1, "fit": "normalized train"}
    provenance: dict[str, Any] = field(default_factory=dict)
    ipc_budget: int | None = None  # explicit storage IPC (e.g. a shrink target); None: the largest class count

    def __post_init__(self) -> None:
        self.images = self.images.detach().float().cpu().contiguous()
        self.labels = self.labels.detach().long().cpu().contiguous()
        if self.soft_labels is not None:
            self.soft_labels = self.soft_labels.detach().float().cpu().contiguous()
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        self.validate()

    # --- checks -----------------------------------------------------------------------------
    def validate(self, where: str = "condensed set") -> None:
        x, y = self.images, self.labels
        if x.ndim != 4:
            raise FormatError(f"{where}: images must be (N, C, H, W), got {tuple(x.shape)}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise FormatError(f"{where}: {x.shape[0]} images but labels of shape {tuple(y.shape)}")
        if x.shape[0] == 0:
            raise FormatError(f"{where}: the set is empty")
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise FormatError(f"{where}: labels span [{int(y.min())}, {int(y.max())}], "
                              f"expected [0, {self.num_classes})")
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise FormatError(f"{where}: {bad} images hold NaN or infinite pixels")
        if self.space not in SPACES:
            raise FormatError(f"{where}: space {self.space!r}, expected one of {SPACES}")
        if self.space == "zca" and not self.zca:
            raise FormatError(f"{where}: space 'zca' needs the whitening it came from (zca=...)")
        if self.space in ("normalized", "zca") and len(self.mean) != x.shape[1]:
            raise FormatError(f"{where}: {self.space} pixels need a mean/std per channel ({x.shape[1]})")
        if self.factor < 1 or x.shape[2] < self.factor:
            raise FormatError(f"{where}: multi-formation factor {self.factor} does not fit {x.shape[2]}px images")
        if self.soft_labels is not None:
            s = self.soft_labels
            if s.shape != (x.shape[0], self.num_classes):
                raise FormatError(f"{where}: soft labels of shape {tuple(s.shape)}, expected "
                                  f"({x.shape[0]}, {self.num_classes}) (one row per image, one column per class)")
            if not torch.isfinite(s).all():
                raise FormatError(f"{where}: soft labels hold NaN or infinite values")
        b = self.ipc_budget
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise FormatError(f"{where}: ipc_budget {b!r} must be a positive integer or None")

    # --- derived ----------------------------------------------------------------------------
    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    @property
    def ipc(self) -> int:
        """Images per class of storage: ``ipc_budget`` when set (e.g. the IPC a set was shrunk to), else the
        largest class count (so unbalanced sets are not under-reported). Per-class counts: :meth:`class_counts`."""
        return self.ipc_budget if self.ipc_budget is not None else max(self.class_counts())

    @property
    def label_kind(self) -> str:
        return "soft" if self.soft_labels is not None else "hard"

    def checksum(self) -> str:
        h = hashlib.sha256()
        for t in (self.images, self.labels, self.soft_labels):
            if t is not None:
                h.update(t.numpy().tobytes())
        return h.hexdigest()

    def decoded(self) -> CondensedSet:
        """The set with multi-formation undone (factor 1), class-contiguous, as IDC evaluates it."""
        if self.factor == 1:
            return self
        if self.soft_labels is not None:
            raise FormatError("decoding multi-formation sets with soft labels is not supported")
        order = torch.argsort(self.labels, stable=True)
        x, y = decode_per_class(self.images[order], self.labels[order], self.factor, self.num_classes)
        prov = {**self.provenance, "decoded_from": {"factor": self.factor, "checksum": self.checksum()}}
        return replace(self, images=x, labels=y, factor=1, provenance=prov, ipc_budget=None)

    def to_labeled(self) -> LabeledImages:
        extra = {"zca": self.zca} if self.zca else {}
        if self.provenance.get("soft_label_loss"):  # e.g. "mse": the soft labels are regression targets (KRR)
            extra["soft_label_loss"] = self.provenance["soft_label_loss"]
        return LabeledImages(images=self.images, labels=self.labels, num_classes=self.num_classes,
                             space=self.space, mean=self.mean, std=self.std, soft_labels=self.soft_labels,
                             name=f"{self.method}:{self.dataset}", extra=extra)

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "dataset": self.dataset, "method": self.method, "ipc": self.ipc,
            "factor": self.factor, "space": self.space, "mean": list(self.mean), "std": list(self.std),
            "zca": self.zca, "num_classes": self.num_classes, "class_counts": self.class_counts(),
            "label_kind": self.label_kind, "image_shape": list(self.images.shape[1:]),
            "provenance": self.provenance, "checksum": self.checksum(),
        }

    def save(self, directory: str | os.PathLike, *, overwrite: bool = True) -> Path:
        return save_condensed(self, directory, overwrite=overwrite)

    @staticmethod
    def ipc_budget_from_meta(meta: dict[str, Any], class_counts: list[int], where: str = "meta.json") -> int | None:
        """The ``ipc_budget`` a ``meta.json`` records: its ``ipc`` when that differs from the largest class
        count (an explicit budget), else None (older sets, and sets whose budget is the largest count)."""
        ipc = meta.get("ipc")
        if ipc is None:
            return None
        if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
            raise FormatError(f"{where}: ipc {ipc!r}, expected a positive integer")
        return None if ipc == max(class_counts) else ipc

    @staticmethod
    def load(directory: str | os.PathLike) -> CondensedSet:
        return load_condensed(directory)


SET_FILES = ("images.safetensors", "meta.json")


def is_condensed_dir(directory: str | os.PathLike) -> bool:
    """``directory`` holds a condensed set and nothing else (so replacing it loses nothing but the set)."""

    return holds_only(directory, SET_FILES, FORMAT)


def save_condensed(cs: CondensedSet, directory: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write ``images.safetensors`` + ``meta.json`` atomically (temporary directory, then rename).

    ``directory`` must be new, empty, or (with ``overwrite``) hold a condensed set and nothing else;
    a folder with other files is refused (ConfigError) and left untouched. Leftovers of killed
    writes next to it are removed first (:func:`harness.io.clean_leftovers`).
    """

    out = Path(directory)
    check_output_dir(out, what="condensed set", is_ours=is_condensed_dir, overwrite=overwrite, option=None,
                     flag="overwrite=True")
    with atomic_dir(out.resolve()) as tmp:
        write_set_files(cs, tmp)
    return out


def write_set_files(cs: CondensedSet, folder: str | os.PathLike) -> None:
    """The two files of a set, written into ``folder`` (a fresh temporary of :func:`harness.io.atomic_dir`)."""
    from safetensors.torch import save_file

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {"images": cs.images, "labels": cs.labels}
    if cs.soft_labels is not None:
        tensors["soft_labels"] = cs.soft_labels
    save_file(tensors, str(d / "images.safetensors"))
    (d / "meta.json").write_text(json.dumps(cs.meta(), indent=2, sort_keys=True))


def load_condensed(directory: str | os.PathLike) -> CondensedSet:
    """Read and validate a set written by :func:`save_condensed`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    meta_p, img_p = d / "meta.json", d / "images.safetensors"
    for p in (meta_p, img_p):
        if not p.is_file():
            raise FormatError(f"{p}: missing; a condensed set directory holds images.safetensors and meta.json")
    meta = read_meta_json(meta_p, FORMAT)
    try:
        t = load_file(str(img_p))
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"{img_p}: unreadable safetensors file ({e})") from None
    missing = {"images", "labels"} - set(t)
    if missing:
        raise FormatError(f"{img_p}: missing tensors {sorted(missing)}")
    try:
        cs = CondensedSet(images=t["images"], labels=t["labels"], num_classes=int(meta["num_classes"]),
                          dataset=meta["dataset"], method=meta["method"], space=meta["space"],
                          mean=tuple(meta.get("mean", ())), std=tuple(meta.get("std", ())),
                          factor=int(meta.get("factor", 1)), soft_labels=t.get("soft_labels"),
                          zca=meta.get("zca"), provenance=meta.get("provenance", {}))
    except FormatError as e:
        raise FormatError(f"{d}: {e}") from None
    except KeyError as e:
        raise FormatError(f"{meta_p}: missing key {e}") from None
    if cs.class_counts() != meta.get("class_counts", cs.class_counts()):
        raise FormatError(f"{d}: per-class counts {cs.class_counts()} differ from meta.json's {meta['class_counts']}")
    if meta.get("checksum") and cs.checksum() != meta["checksum"]:
        raise FormatError(f"{img_p}: checksum mismatch (file changed or corrupt)")
    cs.ipc_budget = CondensedSet.ipc_budget_from_meta(meta, cs.class_counts(), str(meta_p))
    return cs
