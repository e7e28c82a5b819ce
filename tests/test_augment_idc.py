"""IDC's DiffAug(batch=False) (issue 11 item 2): equal to a re-implementation of the authors' code on
injected random values, op-choice frequencies, per-model choices, and the protocol dispatch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.augment import DSA, IDCAugment, IDCDraws, create_augment, list_augments
from harness.engine.protocol import TrainProtocol, create_protocol
from harness.engine.trainer import Trainer
from harness.errors import ConfigError
from harness.models import create_model


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- an independent re-implementation of snu-mllab/Efficient-Dataset-Condensation misc/augment.py ---------
# DiffAug(strategy, batch=False).__call__(x) with single_aug=True, written from reading the authors' file;
# every random value (np.random / torch.rand there) is passed in through ``v`` instead.
class RefDiffAug:
    def __init__(self, strategy: str) -> None:
        self.use_flip = self.use_color = self.use_cutout = False
        self.others: list[str] = []
        for name in strategy.lower().split("_"):
            if name == "flip":
                self.use_flip = True
            elif name == "color":
                self.use_color = True
            elif name == "cutout":
                self.use_cutout = True
            else:
                self.others.append(name)

    def __call__(self, x: torch.Tensor, v: dict) -> torch.Tensor:
        if self.use_flip:  # flip_fn: torch.rand(N, 1, 1, 1) < prob_flip (0.5)
            x = torch.where(v["randf"] < 0.5, x.flip(3), x)
        if self.use_color:  # brightness_fn, saturation_fn, contrast_fn in this order
            x = x + (v["randb"] - 0.5) * 1.0
            mean_c = x.mean(dim=1, keepdim=True)
            x = (x - mean_c) * (v["rands"] * 2.0) + mean_c
            mean_all = x.mean(dim=[1, 2, 3], keepdim=True)
            x = (x - mean_all) * (v["randc"] + 0.5) + mean_all
        if self.others:  # one op per call: np.random.randint(len(self.strategy))
            x = getattr(self, "_" + self.others[v["idx"]])(x, v)
        if self.use_cutout:
            x = self._cutout(x, v)
        return x

    @staticmethod
    def _warp(x: torch.Tensor, theta: list) -> torch.Tensor:
        t = torch.tensor(theta, dtype=torch.float)
        # F.affine_grid / F.grid_sample without align_corners: False since torch 1.3 (YOCO pins torch 2.1)
        grid = F.affine_grid(t, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def _scale(self, x: torch.Tensor, v: dict) -> torch.Tensor:
        sx, sy = v["sx"], v["sy"]  # numpy float64, U[1/1.2, 1.2]
        return self._warp(x, [[[sx[i], 0, 0], [0, sy[i], 0]] for i in range(x.shape[0])])

    def _rotate(self, x: torch.Tensor, v: dict) -> torch.Tensor:
        th = v["theta"]  # numpy float64 radians, U[-15, 15] degrees
        return self._warp(x, [[[np.cos(th[i]), np.sin(-th[i]), 0], [np.sin(th[i]), np.cos(th[i]), 0]]
                              for i in range(x.shape[0])])

    @staticmethod
    def _gather_padded(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, pad: tuple) -> torch.Tensor:
        n, _, h, w = x.shape
        b, r, c = torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij")
        padded = F.pad(x, pad).permute(0, 2, 3, 1)
        return padded[b, rows(r), cols(c)].permute(0, 3, 1, 2)

    def _crop(self, x: torch.Tensor, v: dict) -> torch.Tensor:
        h, w = x.shape[2:]
        tx, ty = v["tx"].view(-1, 1, 1), v["ty"].view(-1, 1, 1)  # in [-round(h/8), round(h/8)]
        return self._gather_padded(x, lambda r: torch.clamp(r + tx + 1, 0, h + 1),
                                   lambda c: torch.clamp(c + ty + 1, 0, w + 1), (1, 1, 1, 1))

    def _translate(self, x: torch.Tensor, v: dict) -> torch.Tensor:
        w = x.shape[3]
        ty = v["translate"].view(-1, 1, 1)
        return self._gather_padded(x, lambda r: r, lambda c: torch.clamp(c + ty + 1, 0, w + 1), (1, 1))

    def _cutout(self, x: torch.Tensor, v: dict) -> torch.Tensor:
        n, _, h, w = x.shape
        sh, sw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        b, r, c = torch.meshgrid(torch.arange(n), torch.arange(sh), torch.arange(sw), indexing="ij")
        r = torch.clamp(r + v["ox"].view(-1, 1, 1) - sh // 2, min=0, max=h - 1)
        c = torch.clamp(c + v["oy"].view(-1, 1, 1) - sw // 2, min=0, max=w - 1)
        mask = torch.ones(n, h, w, dtype=x.dtype)
        mask[b, r, c] = 0
        return x * mask.unsqueeze(1)


def _ref_values(d: IDCDraws, aug: IDCAugment, sl: slice) -> dict:
    """The values IDC would have drawn for the samples ``sl`` (one model), read off our draws."""
    v: dict = {}
    if d.flip is not None:
        v["randf"] = d.flip[sl].view(-1, 1, 1, 1)
    if d.color is not None:
        v["randb"], v["rands"], v["randc"] = (t[sl].view(-1, 1, 1, 1) for t in d.color)
    if d.choice is not None:
        v["idx"] = int(d.choice[sl][0])
        assert bool((d.choice[sl] == v["idx"]).all())  # one op per call (per model)
        p = d.params
        if "scale" in p:
            v["sx"], v["sy"] = (t[sl].double().numpy() for t in p["scale"])
        if "rotate" in p:
            v["theta"] = p["rotate"][0][sl].double().numpy()
        if "crop" in p:
            v["tx"], v["ty"] = (t[sl] for t in p["crop"])
        if "translate" in p:
            v["translate"] = p["translate"][0][sl]
    if d.cutout is not None:
        v["ox"], v["oy"] = (t[sl] for t in d.cutout)
    return v


STRATEGIES = ["color_crop_flip_scale_rotate",  # the idc / yoco presets (cutout dropped for CutMix)
              "color_crop_cutout_flip_scale_rotate",  # IDC's default without CutMix
              "flip_translate_crop_cutout", "color_rotate", "crop_scale_crop", "color_flip"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (6, 1, 12, 16)])
def test_matches_reimplementation_of_idc_diffaug(strategy: str, shape: tuple) -> None:
    aug, ref = IDCAugment(strategy), RefDiffAug(strategy)
    x = torch.randn(*shape, generator=g(0))
    n_ops = max(len(aug.choices), 1)
    for seed in range(2 * n_ops):
        d = aug.draw(shape[0], shape[2], shape[3], g(seed))
        if d.choice is not None:  # every op at least once
            d = dataclasses.replace(d, choice=torch.full_like(d.choice, seed % n_ops))
        ours = aug.apply(x, d)
        theirs = ref(x, _ref_values(d, aug, slice(None)))
        # rotation: IDC builds cos / sin in float64, we in float32 (<= 1 ulp on theta)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 if "rotate" in strategy else 0)
        assert torch.equal(aug(x, g(seed)), aug(x, g(seed)))


def test_ensemble_batch_is_one_diffaug_call_per_model() -> None:
    """models=K: per-sample parameters on the K*B batch, the op drawn per model; each model's slice is IDC's
    DiffAug applied to that model's batch with that model's op."""
    strategy, k, b = "color_crop_cutout_flip_scale_rotate", 12, 4
    aug, ref = IDCAugment(strategy), RefDiffAug(strategy)
    x = torch.randn(k * b, 3, 16, 16, generator=g(1))
    d = aug.draw(k * b, 16, 16, g(2), models=k)
    out = aug.apply(x, d)
    for m in range(k):
        sl = slice(m * b, (m + 1) * b)
        torch.testing.assert_close(out[sl], ref(x[sl], _ref_values(d, aug, sl)), rtol=0, atol=1e-5)
    assert len(set(d.choice.view(k, b)[:, 0].tolist())) > 1  # not one op for the whole ensemble
    torch.testing.assert_close(aug(x, g(2), k), out, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="does not split"):
        aug(x[:5], g(0), 2)


def test_op_choice_frequencies_and_always_applied_ops() -> None:
    aug = IDCAugment("color_crop_flip_scale_rotate")
    assert aug.flip and aug.color and not aug.cutout and aug.choices == ("crop", "scale", "rotate")
    gen = g(0)
    calls = [aug.draw(8, 32, 32, gen) for _ in range(1200)]  # the Trainer: one op per call
    for d in calls:
        assert d.flip is not None and d.color is not None  # flip and colour parameters on every call
        assert len(set(d.choice.tolist())) == 1
    counts = np.bincount([int(d.choice[0]) for d in calls], minlength=3)
    assert (np.abs(counts - 400) < 82).all(), counts  # 1200 x 1/3 +- 5 sd (sd 16.3)
    ens = aug.draw(6000, 32, 32, gen, models=6000)  # the ensemble: one op per model
    counts = np.bincount(ens.choice.numpy(), minlength=3)
    assert (np.abs(counts - 2000) < 183).all(), counts  # 5 sd (36.5)
    flipped = float((ens.flip < 0.5).float().mean())
    assert abs(flipped - 0.5) < 0.033  # per-sample flips with p 0.5 (5 sd)
    dup = IDCAugment("crop_crop_scale").draw(6000, 8, 8, gen, models=6000)
    assert abs(float((dup.choice < 2).float().mean()) - 2 / 3) < 0.031  # repeats count, as np.random.randint


def test_output_statistics_flip_and_colour_every_call() -> None:
    """On outputs: with colour listed every sample's mean moves (brightness), whatever op is drawn; flip
    alone mirrors about half the samples; without colour a crop-only call keeps every value."""
    x = torch.randn(400, 3, 8, 8, generator=g(3))
    col = IDCAugment("color_crop_scale_rotate")
    for seed in range(6):
        y = col(x, g(seed))
        assert bool(((y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))).abs() > 1e-4).float().mean() > 0.99)
    y = IDCAugment("flip")(x, g(4))
    mirrored = sum(torch.equal(y[i], x[i].flip(2)) for i in range(400))
    kept = sum(torch.equal(y[i], x[i]) for i in range(400))
    assert mirrored + kept == 400 and 150 < mirrored < 250  # p 0.5: 200 +- 5 sd (10)
    y = IDCAugment("crop")(x, g(5))
    assert set(y.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_bad_strategies_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown ops"):
        IDCAugment("color_warp")
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(IDCAugment("none")(x, g(0)), x)


def test_presets_default_to_idc_diffaug_and_dsa_stays_available() -> None:
    assert {"none", "dsa", "idc", "dc", "crop_flip"} <= set(list_augments())
    for name in ("idc", "yoco"):
        p = create_protocol(name, "cifar10")
        assert (p.augment, p.dsa_strategy, p.cutmix_p, p.cutmix_beta) == \
            ("idc", "color_crop_flip_scale_rotate", 0.5, 1.0)
        assert "cutout" not in p.dsa_strategy  # IDC argument.py: mixup 'cut' removes cutout
        assert "flip" not in create_protocol(name, "svhn").dsa_strategy
        assert "aug idc (color_crop_flip_scale_rotate)" in p.describe()
    with pytest.raises(ConfigError, match="augment"):
        TrainProtocol("x", augment="idc_like")
    with pytest.raises(ConfigError, match="needs a dsa_strategy"):
        TrainProtocol("x", augment="idc")


@pytest.mark.parametrize("augment", ["idc", "dsa"])
def test_trainer_and_ensemble_dispatch(augment: str) -> None:
    p = create_protocol("idc", "cifar10", augment=augment)
    model = create_model("convnet", num_classes=10, in_chans=3, img_size=32)
    x = torch.randn(16, 3, 32, 32, generator=g(0))
    expected = (IDCAugment if augment == "idc" else DSA)(p.dsa_strategy)(x, g(7))
    assert torch.equal(Trainer(model, p, seed=7).augment(x), expected)
    ens = create_augment(p, ensemble=True)
    y = ens(x, g(1), 4)
    assert y.shape == x.shape and torch.equal(y, ens(x, g(1), 4)) and not torch.equal(y, x)
    if augment == "idc":
        assert isinstance(ens, IDCAugment)
    else:
        from harness.augment import EnsembleDSA

        assert torch.equal(y, EnsembleDSA(p.dsa_strategy)(x, 4, g(1)))
        with pytest.raises(ConfigError, match="one model"):
            create_augment(p)(x, g(1), 4)
