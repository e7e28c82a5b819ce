"""``LabeledImages``: a labelled image tensor that knows which pixel space it lives in.

Spaces:
- ``pixel``: values in [0, 1] (uint8 tensors are pixel space scaled by 255);
- ``normalized``: ``(x - mean) / std`` per channel with the dataset's constants;
- ``zca``: ZCA-whitened normalized pixels (see :mod:`harness.augment` for the transform).

Conversions are explicit methods; nothing converts implicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from harness.errors import FormatError

SPACES = ("pixel", "normalized", "zca")


@dataclass
class LabeledImages:
    images: torch.Tensor  # (N, C, H, W): uint8 for real data, float32 otherwise
    labels: torch.Tensor  # (N,) int64 hard labels
    num_classes: int
    space: str = "pixel"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    class_names: tuple[str, ...] = ()
    soft_labels: torch.Tensor | None = None  # (N, num_classes) float, optional
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the ZCA description

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise FormatError(f"{self.name or 'images'}: space {self.space!r} is not one of {SPACES}")
        if self.images.ndim != 4:
            raise FormatError(f"{self.name or 'images'}: expected images (N, C, H, W), got {tuple(self.images.shape)}")
        if self.labels.ndim != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise FormatError(
                f"{self.name or 'images'}: {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()
        if self.mean and len(self.mean) != self.channels:
            raise FormatError(f"{self.name}: mean has {len(self.mean)} values for {self.channels} channels")

    # --- geometry -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def class_indices(self) -> list[torch.Tensor]:
        """Indices of each class, in dataset order."""
        return [torch.nonzero(self.labels == c).flatten() for c in range(self.num_classes)]

    # --- views ----------------------------------------------------------------------------
    def subset(self, indices: torch.Tensor | Sequence[int]) -> LabeledImages:
        idx = torch.as_tensor(indices, dtype=torch.long)
        soft = self.soft_labels[idx] if self.soft_labels is not None else None
        return replace(self, images=self.images[idx], labels=self.labels[idx], soft_labels=soft)

    def to(self, device: torch.device | str) -> LabeledImages:
        soft = self.soft_labels.to(device) if self.soft_labels is not None else None
        return replace(self, images=self.images.to(device), labels=self.labels.to(device), soft_labels=soft)

    # --- pixel spaces ---------------------------------------------------------------------
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.mean or not self.std:
            raise FormatError(f"{self.name or 'images'}: no mean/std recorded, cannot change space")
        mean = torch.tensor(self.mean, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=like.device).view(1, -1, 1, 1)
        return mean, std

    def pixel_float(self) -> torch.Tensor:
        """Images as float32 in [0, 1] (only from ``pixel`` or ``normalized`` space)."""
        if self.space == "pixel":
            x = self.images
            return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        if self.space == "normalized":
            mean, std = self._stats(self.images)
            return self.images.float() * std + mean
        raise FormatError(f"{self.name}: cannot undo ZCA pixels without the whitening; use harness.augment.ZCA")

    def normalized(self) -> torch.Tensor:
        """Images as float32 ``(x - mean) / std`` (from ``pixel`` or ``normalized`` space)."""
        if self.space == "normalized":
            return self.images.float()
        if self.space == "pixel":
            mean, std = self._stats(self.images)
            return (self.pixel_float() - mean) / std
        raise FormatError(f"{self.name}: images are ZCA-whitened; they have no plain normalized form")

    def as_space(self, space: str) -> LabeledImages:
        """A copy whose pixels are in ``space`` (``pixel`` or ``normalized``)."""
        conv = {"pixel": self.pixel_float, "normalized": self.normalized}
        if space not in conv:
            raise FormatError(f"cannot convert to space {space!r}; use pixel or normalized")
        return replace(self, images=conv[space](), space=space)
