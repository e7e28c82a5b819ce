"""DSA determinism and siamese sharing, DC augmentation, CutMix, crop+flip, ZCA."""

from __future__ import annotations

import math

import pytest
import torch

from harness.augment import DSA, ZCA, DCAugment, DSAParams, crop_flip, cutmix, dsa_crop, dsa_cutout
from harness.errors import ConfigError

FULL = "color_crop_cutout_flip_scale_rotate"


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_seed_same_transform_and_different_seed_differs() -> None:
    x = torch.randn(8, 3, 32, 32)
    dsa = DSA(FULL, mode="M")
    assert torch.equal(dsa(x, g(3)), dsa(x, g(3)))
    assert not torch.equal(dsa(x, g(3)), dsa(x, g(4)))


def test_siamese_shares_parameters_across_batches_of_different_size() -> None:
    real, syn = torch.randn(16, 3, 32, 32), torch.randn(3, 3, 32, 32)
    dsa = DSA(FULL, mode="M")
    both = dsa(torch.cat([real, syn]), g(7), siamese=True)
    # the same draws applied to each batch separately give the same images
    assert torch.allclose(dsa(real, g(7), siamese=True), both[:16], atol=1e-5)
    assert torch.allclose(dsa(syn, g(7), siamese=True), both[16:], atol=1e-5)


def test_per_sample_mode_draws_differ_across_samples() -> None:
    x = torch.randn(1, 3, 32, 32).expand(6, -1, -1, -1).contiguous()
    y = DSA("scale", mode="M")(x, g(0))
    assert not torch.allclose(y[0], y[1])


def test_crop_is_an_integer_shift_with_zero_fill() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1
    p = DSAParams(crop=0.25)  # shift of int(4*0.25+0.5) = 1 px
    for seed in range(20):
        y = dsa_crop(x, 1, g(seed), p)
        nz = y[y != 0]
        assert set(nz.tolist()) <= set(x.flatten().tolist())
        assert (y == 0).sum() in (0, 3, 4, 7)


def test_cutout_erases_a_clipped_square() -> None:
    x = torch.ones(50, 1, 32, 32)
    y = dsa_cutout(x, 50, g(1), DSAParams())
    erased = (y == 0).flatten(1).sum(1)
    assert int(erased.max()) == 256 and int(erased.min()) >= 64  # 16x16, clipped at borders


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown ops"):
        DSA("color_blur")


def test_dc_augment_deterministic_and_changes_images() -> None:
    x = torch.randn(10, 1, 28, 28)
    aug = DCAugment("crop_scale_rotate")
    a, b = aug(x, g(5)), aug(x, g(5))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)


def test_cutmix_box_and_lambda() -> None:
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    mixed, partner, lam = cutmix(x, g(2))
    for i in range(4):
        own = (mixed[i] == x[i, 0, 0, 0]).float().mean().item()
        if partner[i] != i:
            assert math.isclose(own, lam, abs_tol=1e-6)


def test_crop_flip_keeps_shape_and_content() -> None:
    x = torch.randn(5, 3, 32, 32)
    y = crop_flip(x, g(0))
    assert y.shape == x.shape and torch.equal(crop_flip(x, g(0)), y)


def test_zca_round_trip() -> None:
    x = torch.randn(200, 3, 4, 4)
    zca = ZCA(eps=0.1).fit(x)
    w = zca(x[:5])
    assert torch.allclose(zca.inverse(w), x[:5], atol=1e-3)
