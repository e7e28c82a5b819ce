"""Streaming image folders (ImageNet scale): a torch ``Dataset`` for DataLoader workers.

Items are ``(image, label, index)``: the index is the position in the folder's sorted order, so
per-sample statistics gathered from any worker or rank land in dataset order.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from harness.data.formats import IMAGE_SUFFIXES, decode_image
from harness.data.specs import DATASETS, get_spec, resolve_root
from harness.errors import ConfigError, DatasetNotFoundError


class ImageFolderStream(Dataset):
    def __init__(self, root: str | Path, classes: list[str] | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"{self.root}: not found. Expected layout: <root>/<class>/*.jpg")
        present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = classes or present
        missing = sorted(set(self.classes) - set(present))
        if missing:
            raise DatasetNotFoundError(f"{self.root}: class folders missing: {', '.join(missing[:5])}")
        self.samples: list[tuple[Path, int]] = []
        for label, cls in enumerate(self.classes):
            for f in sorted((self.root / cls).iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    self.samples.append((f, label))
        self.targets = torch.tensor([t for _, t in self.samples], dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        path, label = self.samples[index]
        img = decode_image(path.read_bytes(), 3, str(path))
        if self.transform is not None:
            img = self.transform(img)
        return img, label, index


def stream_folders(name: str, data_root: str | Path | None = None) -> tuple[Path, Path, str]:
    """``(train_dir, test_dir, classlist)`` of a registered dataset that has image folders (``spec.folder``).

    The test folder is ``val`` (ImageNet's labelled split, sorted into class folders).
    """

    spec = get_spec(name)
    if not spec.folder:
        have = [n for n in DATASETS.names() if get_spec(n).folder]
        raise ConfigError(f"dataset {name!r} has no image folders to stream (these do: {', '.join(have)})")
    base = resolve_root(data_root) / spec.folder
    train, test = base / "train", base / "val"
    for d in (train, test):
        if not d.is_dir():
            raise DatasetNotFoundError(f"{d}: not found. Expected layout: {spec.layout}")
    return train, test, spec.classlist
