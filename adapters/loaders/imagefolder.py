"""Condensed sets saved as image folders ``<root>/<class>/*.png|jpg`` (DREAM, SRe2L, RDED, ...).

Images become pixel-space float tensors in [0, 1] (8-bit quantised, as published). Class order is
the sorted folder names, or an explicit class list (a list, a shipped class-list name such as
``imagenette``, or a file with one id per line). The number of classes must match the dataset;
images of another size are refused unless ``resize=True`` (bilinear, antialiased).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from adapters.loaders.registry import register_loader
from condensed import CondensedSet
from harness.data import get_spec, read_classlist
from harness.data.formats import IMAGE_SUFFIXES, stack_labelled
from harness.errors import DatasetNotFoundError, FormatError


def check_class_counts(labels: torch.Tensor, num_classes: int, where: str,
                       names: Sequence[str] | None = None) -> list[str]:
    """Refuse a set with a class that holds no image; return warnings (unequal counts) for the provenance.

    A condensed set with an empty class reports a wrong IPC and trains a model that never sees the
    class; unequal per-class counts can be legitimate (imbalanced baselines) and are only warned about.
    """
    labels = labels.long().reshape(-1)
    if labels.numel() == 0:
        raise FormatError(f"{where}: the set holds no image")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise FormatError(f"{where}: labels span [{int(labels.min())}, {int(labels.max())}], "
                          f"expected [0, {num_classes})")
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    empty = [i for i, c in enumerate(counts) if c == 0]
    if empty:
        shown = [names[i] if names is not None else i for i in empty[:5]]
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise FormatError(f"{where}: {len(empty)} of {num_classes} classes hold no image ({shown}{more}); "
                          "a condensed set needs every class")
    if len(set(counts)) > 1:
        return [f"unequal images per class (min {min(counts)}, max {max(counts)}); IPC is reported as the max"]
    return []


def _files(base: Path) -> Iterator[tuple[str, bytes]]:
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                yield f"{cls_dir.name}/{f.name}", f.read_bytes()


def read_class_folders(base: Path, *, dataset: str, classes: Sequence[str] | str | None = None,
                       resize: bool = False, method: str = "imagefolder", source_format: str = "imagefolder",
                       extra_provenance: dict | None = None) -> CondensedSet:
    """One pixel-space :class:`CondensedSet` from ``base/<class>/*`` image files."""
    spec = get_spec(dataset)
    if not base.is_dir():
        raise FormatError(f"{base}: not a folder; expected <folder>/<class>/*.png|jpg")
    folders = sorted(p.name for p in base.iterdir() if p.is_dir())
    if isinstance(classes, str):
        classes = read_classlist(classes)
    names = list(classes) if classes is not None else folders
    if len(names) != spec.num_classes:
        raise FormatError(f"{base}: {len(names)} classes ({', '.join(names[:5])}{'...' if len(names) > 5 else ''}), "
                          f"{dataset} has {spec.num_classes}; pass the class list")
    unknown = sorted(set(folders) - set(names))
    if unknown:
        raise FormatError(f"{base}: class folders {unknown[:5]} are not in the class list")
    label_of = {c: i for i, c in enumerate(names)}
    try:
        images, labels, _ = stack_labelled(_files(base), label_of, spec.channels,
                                           spec.size if resize else None, str(base))
    except DatasetNotFoundError as e:
        raise FormatError(f"{base}: no image files in <class>/ folders ({e})") from None
    if tuple(images.shape[1:]) != spec.geometry:
        raise FormatError(f"{base}: images are {tuple(images.shape[1:])}, {dataset} is {spec.geometry}; "
                          "pass resize=True to resize them")
    warnings = check_class_counts(labels, spec.num_classes, str(base), names)
    prov = {"source_format": source_format, "source_folder": base.name, "class_order": names,
            "resized": resize, **(extra_provenance or {}), **({"warnings": warnings} if warnings else {})}
    return CondensedSet(images=images.float() / 255.0, labels=labels, num_classes=spec.num_classes,
                        dataset=dataset, method=method, space="pixel", mean=spec.mean, std=spec.std,
                        provenance=prov)


@register_loader("imagefolder")
def load_imagefolder(path: Path, *, dataset: str | None = None, classes: Sequence[str] | str | None = None,
                     resize: bool = False, method: str = "imagefolder") -> list[CondensedSet]:
    """Read ``path/<class>/*.png|jpg`` as one pixel-space set (``dataset`` is required)."""
    if dataset is None:
        raise FormatError(f"{path}: an image folder does not say which dataset it condenses; pass dataset=")
    return [read_class_folders(Path(path), dataset=dataset, classes=classes, resize=resize, method=method)]
