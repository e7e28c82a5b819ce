"""IDC's uniform multi-formation decode (Kim et al., ICML 2022, ``decode_zoom``).

A stored image of size H is cut into f x f crops of side s = ceil(H / f) (padding right/bottom
with 0.5 when f does not divide H), taken in row-major (i, j) order and concatenated crop-major
(every image's crop (0, 0), then every image's crop (0, 1), ...); each crop is upsampled back to
H x W bilinearly (align_corners False) and the targets are repeated f^2 times in the same order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def decode_multiformation(images: torch.Tensor, labels: torch.Tensor, factor: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    if factor == 1:
        return images, labels
    n, c, h, w = images.shape
    s = math.ceil(h / factor)
    if h % factor:
        images = F.pad(images, [0, s * factor - w, 0, s * factor - h], value=0.5)
    crops = [images[:, :, i * s:(i + 1) * s, j * s:(j + 1) * s] for i in range(factor) for j in range(factor)]
    out = F.interpolate(torch.cat(crops), size=(h, w), mode="bilinear", align_corners=False)
    return out, labels.repeat(factor * factor)


def decode_per_class(images: torch.Tensor, labels: torch.Tensor, factor: int, num_classes: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode class by class, as IDC's loaders do, so the result stays class-contiguous."""
    if factor == 1:
        return images, labels
    xs, ys = [], []
    for c in range(num_classes):
        sel = labels == c
        x, y = decode_multiformation(images[sel], labels[sel], factor)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)
