"""Multi-formation decode against hand-computed values (IDC ``decode_zoom``, reference §4.2)."""

from __future__ import annotations

import pytest
import torch

from condensed import CondensedSet
from condensed.decode import decode_multiformation, decode_per_class
from harness.errors import FormatError


def _upsample_2x2_to_4x4(p: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x2 -> 4x4 with align_corners=False, written out by hand.

    Output pixel i samples source coordinate (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, which
    clamps to [0, 1]: weights along an axis are (1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1).
    """
    w = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    return w @ p @ w.T


def test_factor2_by_hand_crop_major():
    # one class, two stored 1-channel 4x4 images with distinct values
    a = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    b = 100 + a
    x, y = decode_multiformation(torch.cat([a, b]), torch.tensor([3, 3]), 2)
    assert x.shape == (8, 1, 4, 4) and y.tolist() == [3] * 8
    # crop-major: a(0,0), b(0,0), a(0,1), b(0,1), a(1,0), b(1,0), a(1,1), b(1,1)
    order = [(a, 0, 0), (b, 0, 0), (a, 0, 1), (b, 0, 1), (a, 1, 0), (b, 1, 0), (a, 1, 1), (b, 1, 1)]
    for k, (img, i, j) in enumerate(order):
        crop = img[0, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
        torch.testing.assert_close(x[k, 0], _upsample_2x2_to_4x4(crop))
    # a concrete number: a's crop (0, 0) is [[0, 1], [4, 5]]; output pixel (1, 1) = 0.75*0.75*0 + ... = 1.25
    assert x[0, 0, 1, 1].item() == pytest.approx(0.75 * 0.75 * 0 + 0.75 * 0.25 * 1 + 0.25 * 0.75 * 4
                                                  + 0.25 * 0.25 * 5)


def test_factor_not_dividing_pads_with_half():
    # 3x3 image, factor 2: pad right/bottom to 4x4 with 0.5, crops of side ceil(3/2) = 2
    img = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    x, y = decode_multiformation(img, torch.tensor([0]), 2)
    assert x.shape == (4, 1, 3, 3)
    padded = torch.full((4, 4), 0.5)
    padded[:3, :3] = img[0, 0]
    # bottom-right crop is [[8, .5], [.5, .5]]; upsample 2x2 -> 3x3: coords (i + .5) * 2/3 - .5
    crop = padded[2:4, 2:4]
    expected = torch.nn.functional.interpolate(crop.view(1, 1, 2, 2), size=(3, 3), mode="bilinear",
                                               align_corners=False)[0, 0]
    torch.testing.assert_close(x[3, 0], expected)
    assert x[3, 0, 2, 2].item() == pytest.approx(0.5)  # pure padding corner
    assert x[3, 0, 0, 0].item() == pytest.approx(8.0)  # clamped sample of the one real pixel


def test_decoded_is_per_class_and_class_contiguous():
    # two classes, two images each, stored class-major; factor 2 -> 8 decoded per class
    imgs = torch.stack([torch.full((1, 4, 4), float(v)) for v in (1, 2, 3, 4)])
    labels = torch.tensor([0, 0, 1, 1])
    cs = CondensedSet(images=imgs, labels=labels, num_classes=2, dataset="digits", method="IDC", space="pixel",
                      mean=(0.3,), std=(0.4,), factor=2)
    d = cs.decoded()
    assert d.factor == 1 and d.labels.tolist() == [0] * 8 + [1] * 8
    # crop-major inside each class: values alternate image 1, image 2 (constant images)
    assert d.images[:8, 0, 0, 0].tolist() == [1, 2, 1, 2, 1, 2, 1, 2]
    assert d.images[8:, 0, 0, 0].tolist() == [3, 4, 3, 4, 3, 4, 3, 4]
    assert d.provenance["decoded_from"]["factor"] == 2
    # same as the reference loop over classes
    x, y = decode_per_class(imgs, labels, 2, 2)
    torch.testing.assert_close(d.images, x)


def test_factor_exceeding_image_is_refused():
    with pytest.raises(FormatError, match="factor"):
        CondensedSet(images=torch.zeros(2, 1, 4, 4), labels=torch.tensor([0, 1]), num_classes=2, dataset="digits",
                     method="IDC", space="pixel", factor=5)
