"""Augmentation on the device: DSA, the DC paper's augmentation, CutMix, and ZCA whitening.

DSA (Zhao & Bilen, "Dataset Condensation with Differentiable Siamese Augmentation", ICML 2021)
with the reference parameters: scale U[1/1.2, 1.2] per axis, rotation U[-15, 15] degrees, integer
crop shifts of round(0.125 H) with zero fill, a cutout square of side round(0.5 H) set to 0,
horizontal flip with p 0.5, brightness +U[-0.5, 0.5), saturation x U[0, 2) around the channel mean,
contrast x U[0.5, 1.5) around the image mean. All ops work on normalized pixels without clipping.
Mode ``S`` applies one op group per call (``color`` = brightness, saturation, contrast); ``M``
applies every group in turn. Parameters are drawn per sample from a ``torch.Generator``; in
siamese mode one parameter set is drawn and shared by every sample, so two calls with generators
seeded alike transform a real batch and a synthetic batch identically, whatever their sizes.

IDC's ``DiffAug(batch=False)`` (:class:`IDCAugment`, the ``idc`` / ``yoco`` protocols) uses the same ops
and constants in another arrangement: flip and colour on every call, then one of the remaining ops.
``register_augment`` / ``create_augment`` map ``TrainProtocol.augment`` (none, dsa, idc, dc, crop_flip, flip) to a
batched augmenter ``(x, generator, models) -> x`` for the Trainer and the vmapped ensemble;
``register_stream_augment`` / ``create_stream_augment`` map the same names (none, flip, crop_flip, and the
streamed-only rrc_flip) to a per-image view ``(x, generator, size)`` for the DDP trainer's loader workers.
A name without the form a trainer needs is refused with a ConfigError, never approximated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.registry import Registry
from harness.rotate import rotate_like_scipy


@dataclass(frozen=True)
class DSAParams:
    scale: float = 1.2
    rotate: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    prob_flip: float = 0.5


def _rand(n: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device)


def _randint(lo: int, hi: int, n: int, g: torch.Generator, device) -> torch.Tensor:
    return torch.randint(lo, hi, (n,), generator=g, device=device)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def _expand(v: torch.Tensor, n: int) -> torch.Tensor:
    return v.expand(n, *v.shape[1:]) if v.shape[0] == 1 else v


# Parameter -> image kernels shared by DSA and IDC's DiffAug. Parameters are per sample, shaped to broadcast.
def _scale_theta(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    theta = torch.zeros(sx.shape[0], 2, 3, device=sx.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return theta


def _rotate_theta(ang: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(ang.shape[0], 2, 3, device=ang.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    return theta


def _brightness(x: torch.Tensor, b: torch.Tensor, ratio: float) -> torch.Tensor:
    """x + (b - 0.5) ratio, b ~ U[0, 1)."""
    return x + (b.to(x.dtype) - 0.5) * ratio


def _saturation(x: torch.Tensor, s: torch.Tensor, ratio: float) -> torch.Tensor:
    """(x - m) (s ratio) + m, m the per-pixel mean over channels, s ~ U[0, 1)."""
    s = s.to(x.dtype)
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (s * ratio) + m


def _contrast(x: torch.Tensor, c: torch.Tensor, ratio: float) -> torch.Tensor:
    """(x - m) (c + ratio) + m, m the image mean, c ~ U[0, 1)."""
    c = c.to(x.dtype)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (c + ratio) + m


def _cutout_size(x: torch.Tensor, ratio: float) -> tuple[int, int]:
    h, w = x.shape[2:]
    return int(h * ratio + 0.5), int(w * ratio + 0.5)


def _cutout(x: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the square of side round(ratio H) centred at (ox, oy) (sample offsets (N,)), clipped to the image."""
    n, _, h, w = x.shape
    ch, cw = _cutout_size(x, ratio)
    ox, oy = ox.view(n, 1, 1), oy.view(n, 1, 1)
    r = torch.arange(h, device=x.device).view(1, h, 1)
    c = torch.arange(w, device=x.device).view(1, 1, w)
    # the reference clamps the square's indices to the image; the erased set is the same as this box test
    lo_r, lo_c = (ox - ch // 2).clamp(0, h - 1), (oy - cw // 2).clamp(0, w - 1)
    hi_r, hi_c = (ox - ch // 2 + ch - 1).clamp(0, h - 1), (oy - cw // 2 + cw - 1).clamp(0, w - 1)
    inside = (r >= lo_r) & (r <= hi_r) & (c >= lo_c) & (c <= hi_c)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# Each op: (x, draws, generator, params) -> x. ``draws`` is the number of parameter sets: N, or 1 (siamese).
def dsa_scale(x, k, g, p: DSAParams):
    sx = _rand(k, g, x.device) * (p.scale - 1.0 / p.scale) + 1.0 / p.scale
    sy = _rand(k, g, x.device) * (p.scale - 1.0 / p.scale) + 1.0 / p.scale
    return _affine(x, _expand(_scale_theta(sx, sy), x.shape[0]))


def dsa_rotate(x, k, g, p: DSAParams):
    ang = (_rand(k, g, x.device) - 0.5) * 2 * p.rotate / 180 * math.pi
    return _affine(x, _expand(_rotate_theta(ang), x.shape[0]))


def dsa_flip(x, k, g, p: DSAParams):
    f = _expand((_rand(k, g, x.device) < p.prob_flip).view(k, 1, 1, 1), x.shape[0])
    return torch.where(f, x.flip(3), x)


def dsa_brightness(x, k, g, p: DSAParams):
    return _brightness(x, _expand(_rand(k, g, x.device).view(k, 1, 1, 1), x.shape[0]), p.brightness)


def dsa_saturation(x, k, g, p: DSAParams):
    return _saturation(x, _expand(_rand(k, g, x.device).view(k, 1, 1, 1), x.shape[0]), p.saturation)


def dsa_contrast(x, k, g, p: DSAParams):
    return _contrast(x, _expand(_rand(k, g, x.device).view(k, 1, 1, 1), x.shape[0]), p.contrast)


def _shift(x: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Integer translation per sample (rows by ``tx``, columns by ``ty``); vacated pixels get ``fill``."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) + tx.view(-1, 1, 1) + 1
    cols = torch.arange(w, device=x.device).view(1, 1, w) + ty.view(-1, 1, 1) + 1
    rows, cols = rows.clamp(0, h + 1).expand(n, h, w), cols.clamp(0, w + 1).expand(n, h, w)
    if isinstance(fill, torch.Tensor):
        pad = F.pad(x - fill, [1, 1, 1, 1])
    else:
        pad = F.pad(x, [1, 1, 1, 1], value=fill)
    idx = (rows * (w + 2) + cols).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    out = pad.flatten(2).gather(2, idx).view_as(x)
    return out + fill if isinstance(fill, torch.Tensor) else out


def dsa_crop(x, k, g, p: DSAParams):
    h, w = x.shape[2:]
    sx, sy = int(h * p.crop + 0.5), int(w * p.crop + 0.5)
    tx = _expand(_randint(-sx, sx + 1, k, g, x.device), x.shape[0])
    ty = _expand(_randint(-sy, sy + 1, k, g, x.device), x.shape[0])
    return _shift(x, tx, ty)


def dsa_cutout(x, k, g, p: DSAParams):
    n, _, h, w = x.shape
    ch, cw = _cutout_size(x, p.cutout)
    ox = _expand(_randint(0, h + (1 - ch % 2), k, g, x.device), n)
    oy = _expand(_randint(0, w + (1 - cw % 2), k, g, x.device), n)
    return _cutout(x, ox, oy, p.cutout)


DSA_GROUPS: dict[str, tuple[Callable, ...]] = {
    "color": (dsa_brightness, dsa_saturation, dsa_contrast),
    "crop": (dsa_crop,),
    "cutout": (dsa_cutout,),
    "flip": (dsa_flip,),
    "scale": (dsa_scale,),
    "rotate": (dsa_rotate,),
}


class DSA:
    """Differentiable siamese augmentation, batched on the tensor's device.

    ``DSA("color_crop_cutout_flip_scale_rotate")(x, generator)``; pass ``siamese=True`` and two
    generators seeded alike to transform two batches identically.
    """

    def __init__(self, strategy: str, params: DSAParams = DSAParams(), mode: str = "S") -> None:
        groups = [s for s in strategy.split("_") if s]
        unknown = [s for s in groups if s not in DSA_GROUPS]
        if unknown or not groups:
            raise ConfigError(f"DSA strategy {strategy!r}: unknown ops {unknown} (known: {sorted(DSA_GROUPS)})")
        if mode not in ("S", "M"):
            raise ConfigError(f"DSA mode {mode!r}: expected 'S' (one op group per call) or 'M' (all groups)")
        self.strategy, self.groups, self.params, self.mode = strategy, groups, params, mode

    def __repr__(self) -> str:
        return f"DSA({self.strategy!r}, mode={self.mode!r})"

    def __call__(self, x: torch.Tensor, generator: torch.Generator, *, siamese: bool = False) -> torch.Tensor:
        k = 1 if siamese else x.shape[0]
        if self.mode == "S":
            choice = int(torch.randint(len(self.groups), (1,), generator=generator, device=generator.device))
            chosen = [self.groups[choice]]
        else:
            chosen = self.groups
        for group in chosen:
            for op in DSA_GROUPS[group]:
                x = op(x, k, generator, self.params)
        return x


# --- IDC's DiffAug(batch=False), batched over models --------------------------------------------
def _idc_crop_draw(n: int, h: int, w: int, g: torch.Generator, p: DSAParams) -> tuple[torch.Tensor, ...]:
    sx, sy = int(h * p.crop + 0.5), int(w * p.crop + 0.5)
    return _randint(-sx, sx + 1, n, g, g.device), _randint(-sy, sy + 1, n, g, g.device)


def _idc_translate_draw(n: int, h: int, w: int, g: torch.Generator, p: DSAParams) -> tuple[torch.Tensor, ...]:
    sy = int(w * p.crop + 0.5)
    return (_randint(-sy, sy + 1, n, g, g.device),)


def _idc_scale_draw(n: int, h: int, w: int, g: torch.Generator, p: DSAParams) -> tuple[torch.Tensor, ...]:
    lo = 1.0 / p.scale
    return _rand(n, g, g.device) * (p.scale - lo) + lo, _rand(n, g, g.device) * (p.scale - lo) + lo


def _idc_rotate_draw(n: int, h: int, w: int, g: torch.Generator, p: DSAParams) -> tuple[torch.Tensor, ...]:
    return ((_rand(n, g, g.device) - 0.5) * 2 * p.rotate / 180 * math.pi,)


# The ops of which DiffAug applies one per call: name -> (draw (n, h, w, generator, params), apply (x, draws)).
IDC_CHOICE_OPS: dict[str, tuple[Callable[..., tuple[torch.Tensor, ...]], Callable[..., torch.Tensor]]] = {
    "crop": (_idc_crop_draw, lambda x, d: _shift(x, d[0], d[1])),
    "scale": (_idc_scale_draw, lambda x, d: _affine(x, _scale_theta(d[0], d[1]))),
    "rotate": (_idc_rotate_draw, lambda x, d: _affine(x, _rotate_theta(d[0]))),
    "translate": (_idc_translate_draw, lambda x, d: _shift(x, torch.zeros_like(d[0]), d[0])),
}


class EnsembleDSA(DSA):
    """DSA on a ``(K*B, C, H, W)`` ensemble batch: per-sample parameters, op group drawn per model.

    The ops and parameter distributions are :mod:`harness.augment`'s (the reference ``ParamDiffAug``).
    Mode ``S``: each model draws one group per call (one group shared by all models would correlate
    the runs and shrink the reported std); mode ``M``: every group in strategy order.
    """

    def __call__(self, x: torch.Tensor, models: int, generator: torch.Generator) -> torch.Tensor:  # type: ignore[override]
        n = x.shape[0]
        if n % models:
            raise ConfigError(f"ensemble batch of {n} samples does not split into {models} models")
        if self.mode == "S":
            choice = torch.randint(len(self.groups), (models,), generator=generator, device=x.device)
            choice = choice.repeat_interleave(n // models).view(n, 1, 1, 1)  # the group of each sample's model
        for gi, group in enumerate(self.groups):
            y = x
            for op in DSA_GROUPS[group]:
                y = op(y, n, generator, self.params)
            x = torch.where(choice == gi, y, x) if self.mode == "S" else y
        return x


@dataclass(frozen=True)
class IDCDraws:
    """One call's random parameters, one entry per sample (N = models x batch)."""

    flip: torch.Tensor | None  # (N,) U[0, 1): a sample is flipped where < prob_flip
    color: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # (N,) each U[0, 1): brightness, saturation, contrast
    choice: torch.Tensor | None  # (N,) long index into IDCAugment.choices, equal within one model's samples
    params: dict[str, tuple[torch.Tensor, ...]]  # per distinct choice op: crop (tx, ty), scale (sx, sy),
    # rotate (angle,), translate (ty,)
    cutout: tuple[torch.Tensor, torch.Tensor] | None  # (N,) centre row and column of the square


class IDCAugment:
    """IDC's evaluation / network-update augmentation ``DiffAug(strategy, batch=False)``, on the device.

    Kim et al., "Dataset Condensation via Efficient Synthetic-Data Parameterization", ICML 2022;
    snu-mllab/Efficient-Dataset-Condensation ``misc/augment.py`` (``__call__`` lines 53-83), built by
    ``train.py:122`` for evaluation (YOCO's ``train.py:80`` and ``get_training_dynamics.py:368`` are the
    same). Unlike VICO's DSA mode ``S`` (one group per call), each call applies, in this order:

    1. ``flip`` (if listed): per sample with p 0.5 (``flip_fn``, ``torch.rand(N) < 0.5``);
    2. ``color`` (if listed): brightness x + (b - 0.5), saturation (x - m_c) 2s + m_c, contrast
       (x - m) (c + 0.5) + m, with b, s, c ~ U[0, 1) per sample;
    3. **one** op drawn uniformly **per call** (``np.random.randint``) from the other listed ops
       (crop / scale / rotate / translate, in strategy order, repeats counted), with per-sample parameters:
       crop integer shifts in [-round(0.125 H), round(0.125 H)] with zero fill; scale grid factors
       sx, sy ~ U[1/1.2, 1.2]; rotation U[-15, 15] degrees (bilinear ``grid_sample``, zero padding,
       ``align_corners=False``); translate a column shift as crop's;
    4. ``cutout`` (if listed): a square of side round(0.5 H) centred per sample, clipped, set to 0. IDC and
       YOCO drop ``cutout`` from the strategy when CutMix is on (``argument.py:451``), as the presets do.

    All ops work on normalised pixels without clipping; the constants are :class:`DSAParams`'. With
    ``models = K`` the batch is K models' batches stacked (K*B samples) and step 3 draws one op per model,
    so the K runs stay independent. Every op of step 3 is computed on the whole batch and a per-sample
    ``where`` keeps the drawn one: a fixed number of draws per call, no host synchronisation.
    """

    FLAGS = ("flip", "color", "cutout")

    def __init__(self, strategy: str, params: DSAParams = DSAParams()) -> None:
        s = strategy.lower()
        parts = [] if s in ("", "none") else [a for a in s.split("_") if a]
        unknown = [a for a in parts if a not in self.FLAGS and a not in IDC_CHOICE_OPS]
        if unknown:
            raise ConfigError(f"IDC augmentation {strategy!r}: unknown ops {unknown} "
                              f"(known: {sorted((*self.FLAGS, *IDC_CHOICE_OPS))})")
        self.strategy, self.params = strategy, params
        self.flip, self.color, self.cutout = (f in parts for f in self.FLAGS)
        self.choices = tuple(a for a in parts if a not in self.FLAGS)
        self._ops = tuple(dict.fromkeys(self.choices))  # distinct, in strategy order
        self._op_of_choice = torch.tensor([self._ops.index(a) for a in self.choices], dtype=torch.long)
        self._op_on: dict[torch.device, torch.Tensor] = {}  # that table per device: copied once, not per call

    def __repr__(self) -> str:
        return f"IDCAugment({self.strategy!r})"

    def draw(self, n: int, h: int, w: int, generator: torch.Generator, models: int = 1) -> IDCDraws:
        """The parameters of one call on ``n`` samples of size ``h`` x ``w`` (``models`` batches of n / models)."""
        if models < 1 or n % models:
            raise ConfigError(f"IDC augmentation: a batch of {n} samples does not split into {models} models")
        g, p = generator, self.params
        flip = _rand(n, g, g.device) if self.flip else None
        color = (_rand(n, g, g.device), _rand(n, g, g.device), _rand(n, g, g.device)) if self.color else None
        choice, params = None, {}
        if self.choices:
            choice = torch.randint(len(self.choices), (models,), generator=g, device=g.device)
            choice = choice.repeat_interleave(n // models)
            params = {name: IDC_CHOICE_OPS[name][0](n, h, w, g, p) for name in self._ops}
        cutout = None
        if self.cutout:
            ch, cw = int(h * p.cutout + 0.5), int(w * p.cutout + 0.5)
            cutout = (_randint(0, h + (1 - ch % 2), n, g, g.device), _randint(0, w + (1 - cw % 2), n, g, g.device))
        return IDCDraws(flip, color, choice, params, cutout)

    def apply(self, x: torch.Tensor, d: IDCDraws) -> torch.Tensor:
        """Transform ``x`` (N, C, H, W) with the parameters ``d`` (a pure function of both)."""
        n, dev, p = x.shape[0], x.device, self.params
        if d.flip is not None:
            x = torch.where((d.flip.to(dev) < p.prob_flip).view(n, 1, 1, 1), x.flip(3), x)
        if d.color is not None:
            b, s, c = (t.to(dev).view(n, 1, 1, 1) for t in d.color)
            x = _contrast(_saturation(_brightness(x, b, p.brightness), s, p.saturation), c, p.contrast)
        if d.choice is not None:
            if dev not in self._op_on:
                self._op_on[dev] = self._op_of_choice.to(dev)
            op = self._op_on[dev][d.choice.to(dev)].view(n, 1, 1, 1)
            out = x
            for j, name in enumerate(self._ops):
                y = IDC_CHOICE_OPS[name][1](x, tuple(t.to(dev) for t in d.params[name]))
                out = torch.where(op == j, y, out)
            x = out
        if d.cutout is not None:
            x = _cutout(x, d.cutout[0].to(dev), d.cutout[1].to(dev), p.cutout)
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator, models: int = 1) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], x.shape[2], x.shape[3], generator, models))


# --- the DC paper's augmentation (VICO utils.augment), batched -----------------------------------
@dataclass(frozen=True)
class DCAugParams:
    crop: int = 4
    scale: float = 0.2
    rotate: int = 45
    noise: float = 0.001


@dataclass(frozen=True)
class DCDraws:
    """One :class:`DCAugment` call's random parameters, one entry per image."""

    choice: torch.Tensor  # (N,) long index into DCAugment.ops
    params: dict[str, tuple[torch.Tensor, ...]]  # crop (row corner, col corner), scale (h, w), rotate (deg,),
    # noise (N(0, 1) of the batch's shape,)


class DCAugment:
    """DC's evaluation augmentation: one op per image from the strategy (e.g. ``crop_scale_rotate``).

    crop: shift by up to ``crop`` px with the batch's channel means as fill; scale: nearest resize by
    U[0.8, 1.2] per axis, centred on a zero canvas; rotate: an integer angle in [-45, 45), filled with the
    mean of the channel means, exactly as the reference's ``scipy.ndimage.rotate`` (cubic spline,
    enlarged then centre-cropped; :mod:`harness.rotate`); noise: + 0.001 N(0, 1). Given the same draws,
    every op equals VICO ``utils.augment``'s to float32 rounding (tests/test_augment_dc.py).
    """

    OPS = ("crop", "scale", "rotate", "noise")

    def __init__(self, strategy: str, params: DCAugParams = DCAugParams()) -> None:
        self.ops = [s for s in strategy.split("_") if s]
        bad = [s for s in self.ops if s not in self.OPS]
        if bad or not self.ops:
            raise ConfigError(f"DC augmentation {strategy!r}: unknown ops {bad} (known: {self.OPS})")
        self.strategy, self.params = strategy, params

    def __repr__(self) -> str:
        return f"DCAugment({self.strategy!r})"

    def draw(self, shape: tuple[int, int, int, int], generator: torch.Generator,
             dtype: torch.dtype = torch.float32) -> DCDraws:
        """The random parameters of one call on a batch of ``shape`` (N, C, H, W), in the reference's order
        of ops (one op per image; each op's parameters are drawn for every image, used where chosen)."""
        n, _, h, _ = shape
        g, dev, p = generator, generator.device, self.params
        choice = torch.randint(len(self.ops), (n,), generator=g, device=dev)
        params: dict[str, tuple[torch.Tensor, ...]] = {}
        for op in self.ops:
            if op == "crop":  # the window's corner in the padded image, 0 .. 2 crop - 1 (shift = corner - crop)
                params[op] = (torch.randint(2 * p.crop, (n,), generator=g, device=dev),
                              torch.randint(2 * p.crop, (n,), generator=g, device=dev))
            elif op == "scale":  # the resized height and width: int(U[1 - s, 1 + s) H), both from H as in VICO
                fh = torch.rand(n, generator=g, device=dev) * 2 * p.scale + 1 - p.scale
                fw = torch.rand(n, generator=g, device=dev) * 2 * p.scale + 1 - p.scale
                params[op] = ((fh * h).long(), (fw * h).long())
            elif op == "rotate":  # integer degrees in [-rotate, rotate)
                params[op] = (torch.randint(-p.rotate, p.rotate, (n,), generator=g, device=dev),)
            else:
                params[op] = (torch.randn(shape, generator=g, device=dev, dtype=dtype),)
        return DCDraws(choice, params)

    def apply(self, x: torch.Tensor, d: DCDraws) -> torch.Tensor:
        """Transform ``x`` (N, C, H, W) with the parameters ``d``; the fills are the batch's channel means."""
        n, c = x.shape[:2]
        dev, p = x.device, self.params
        mean = x.mean(dim=(0, 2, 3)).view(1, c, 1, 1)
        choice = d.choice.to(dev)
        out = x
        for k, op in enumerate(self.ops):
            a = tuple(t.to(dev) for t in d.params[op])
            if op == "crop":
                y = _shift(x, a[0] - p.crop, a[1] - p.crop, fill=mean)
            elif op == "scale":
                y = _dc_scale(x, a[0], a[1])
            elif op == "rotate":
                y = rotate_like_scipy(x, a[0], mean.mean(), -p.rotate, p.rotate)
            else:
                y = x + p.noise * a[0].to(x.dtype)
            out = torch.where((choice == k).view(n, 1, 1, 1), y, out)
        return out

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(tuple(x.shape), generator, x.dtype))


def _dc_scale(x: torch.Tensor, hs: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Nearest resize of each image to (hs, ws), centred on a zero canvas, centre-cropped back."""
    n, c, h, w = x.shape
    m = torch.maximum(torch.maximum(hs, ws), torch.full_like(hs, max(h, w)))
    r0, c0 = (m - hs) // 2, (m - ws) // 2
    r1, c1 = (m - h) // 2, (m - w) // 2
    a = torch.arange(h, device=x.device).view(1, h, 1) + (r1 - r0).view(n, 1, 1)  # row in the resized image
    b = torch.arange(w, device=x.device).view(1, 1, w) + (c1 - c0).view(n, 1, 1)
    valid = (a >= 0) & (a < hs.view(n, 1, 1)) & (b >= 0) & (b < ws.view(n, 1, 1))
    src_r = (a.clamp(min=0) * h // hs.view(n, 1, 1)).clamp(max=h - 1)
    src_c = (b.clamp(min=0) * w // ws.view(n, 1, 1)).clamp(max=w - 1)
    idx = (src_r * w + src_c).expand(n, h, w).reshape(n, 1, h * w).expand(-1, c, -1)
    out = x.flatten(2).gather(2, idx).view_as(x)
    return out * valid.unsqueeze(1).to(x.dtype)


# --- CutMix (Yun et al., ICCV 2019) as IDC/YOCO use it -------------------------------------------
def cutmix(x: torch.Tensor, generator: torch.Generator, beta: float = 1.0
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a box of a shuffled partner into each image. Returns (mixed, partner index, lam).

    lam ~ Beta(beta, beta); the box has side sqrt(1 - lam) of the image, centred uniformly and
    clipped; lam is then corrected to the kept area. Loss: lam CE(y) + (1 - lam) CE(y[partner]).
    """
    n, _, h, w = x.shape
    cpu = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator,
                                                          device=generator.device)))
    if beta == 1.0:
        lam = float(torch.rand(1, generator=cpu))
    else:
        ga = torch._standard_gamma(torch.full((2,), beta, dtype=torch.float64))  # noqa: SLF001
        lam = float(ga[0] / ga.sum())
    partner = torch.randperm(n, generator=generator, device=generator.device).to(x.device)
    cut = math.sqrt(1.0 - lam)
    cw, chh = int(w * cut), int(h * cut)
    cx, cy = int(torch.randint(w, (1,), generator=cpu)), int(torch.randint(h, (1,), generator=cpu))
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    y1, y2 = max(cy - chh // 2, 0), min(cy + chh // 2, h)
    mixed = x.clone()
    mixed[:, :, y1:y2, x1:x2] = x[partner, :, y1:y2, x1:x2]
    lam = 1.0 - ((x2 - x1) * (y2 - y1) / (w * h))
    return mixed, partner, lam


# --- ZCA whitening: MTT's (kornia ZCAWhitening) and KIP's (layer-normed, trace-scaled) ---------------
ZCA_FIT_SPACES = ("pixel", "normalized")
ZCA_IMPLS = {"kornia.enhance.ZCAWhitening": "kornia", "kip": "kip"}  # recorded "impl" -> kind


class ZCA:
    """ZCA whitening fitted on the real training split; ``__call__`` whitens, ``inverse`` undoes it.

    ``fit`` and ``__call__`` take images in ``fit_space`` ('pixel' = [0, 1], or 'normalized').

    - ``kind='kornia'``: ``kornia.enhance.ZCAWhitening(eps, compute_inv=True)``: mu = mean(X),
      Sigma = (X - mu)^T (X - mu) / (N - 1) = U S U^T, z = (x - mu) U (S + eps)^-1/2 U^T. MTT
      (utils.py ``get_dataset``, ``--zca``) fits it with eps 0.1 on ``ToTensor()`` pixels in [0, 1]
      with no ``Normalize`` -> ``fit_space='pixel'``; its ``images_best.pt`` live in that space.
    - ``kind='kip'``: KIP's ``zca_normalize`` (google-research ``kip/nn_training.ipynb``,
      ``_get_whitening_transform`` / ``_get_preprocess_op``): standardize each channel with the fit
      data's mean/std (population), then per image subtract the mean over all D features and divide
      by the L2 norm; Sigma = X^T X / N (uncentred), lam = eps * tr(Sigma) / D,
      W = U (S + lam)^-1/2 U^T with the factors past the N-th largest eigenvalue set to 1 when N < D;
      z = x W. Per-channel standardization makes the fit space immaterial. Not invertible.
    """

    def __init__(self, eps: float = 0.1, *, fit_space: str = "normalized", kind: str = "kornia") -> None:
        if fit_space not in ZCA_FIT_SPACES:
            raise ConfigError(f"ZCA fit_space={fit_space!r}, expected one of {ZCA_FIT_SPACES}")
        if kind not in ZCA_IMPLS.values():
            raise ConfigError(f"ZCA kind={kind!r}, expected one of {sorted(set(ZCA_IMPLS.values()))}")
        self.eps, self.fit_space, self.kind = float(eps), fit_space, kind
        self._zca = None
        self._kip: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # channel mean, std, W
        if kind == "kornia":
            import kornia

            self._zca = kornia.enhance.ZCAWhitening(eps=self.eps, compute_inv=True)

    @classmethod
    def from_record(cls, record: dict) -> ZCA:
        """The whitening a condensed set's ``zca`` record describes: ``{"impl", "eps", "fit": "<space> train"}``
        (``fit`` defaults to 'normalized train' and ``impl`` to kornia, as sets written before it was recorded)."""
        impl = record.get("impl", "kornia.enhance.ZCAWhitening")
        fit = str(record.get("fit", "normalized train"))
        space = fit.split()[0] if fit.endswith(" train") else ""
        if impl not in ZCA_IMPLS or space not in ZCA_FIT_SPACES:
            raise ConfigError(f"zca record {record}: impl must be one of {sorted(ZCA_IMPLS)} and fit one of "
                              f"{[s + ' train' for s in ZCA_FIT_SPACES]}")
        return cls(float(record.get("eps", 0.1)), fit_space=space, kind=ZCA_IMPLS[impl])

    def fit(self, train: torch.Tensor) -> ZCA:
        if self._zca is not None:
            self._zca.fit(train.float())
            return self
        n, d, dev = train.shape[0], train[0].numel(), train.device
        s1 = torch.zeros(train.shape[1], dtype=torch.float64, device=dev)
        s2 = torch.zeros_like(s1)
        for chunk in torch.split(train, 4096):  # chunks: a float64 copy of a whole split is GBs
            c = chunk.double()
            s1 += c.sum(dim=(0, 2, 3))
            s2 += c.square().sum(dim=(0, 2, 3))
        m = n * train.shape[2] * train.shape[3]
        mean = s1 / m
        std = (s2 / m - mean.square()).clamp_min(0).sqrt()
        cov = torch.zeros(d, d, dtype=torch.float64, device=dev)
        for chunk in torch.split(train, 4096):
            f = self._kip_flat(chunk, mean, std)
            cov += f.T @ f
        cov /= n
        lam = self.eps * torch.trace(cov) / d
        evals, evecs = torch.linalg.eigh(cov + lam * torch.eye(d, dtype=cov.dtype, device=cov.device))
        evals, evecs = evals.flip(0), evecs.flip(1)  # descending, as KIP's SVD
        inv_sqrt = evals.clamp_min(torch.finfo(evals.dtype).tiny).rsqrt()
        if n < d:
            inv_sqrt[n:] = 1.0
        self._kip = (mean, std, (evecs * inv_sqrt) @ evecs.T)
        return self

    @staticmethod
    def _kip_flat(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        f = ((x.double() - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).flatten(1)
        f = f - f.mean(dim=1, keepdim=True)
        return f / f.norm(dim=1, keepdim=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._zca is not None:
            return self._zca(x.float(), include_fit=False)
        if self._kip is None:
            raise ConfigError("ZCA: call fit() on the real training split first")
        mean, std, w = self._kip
        return (self._kip_flat(x, mean, std) @ w).float().view(x.shape)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        if self._zca is None:
            raise ConfigError("KIP's ZCA is not invertible (each image is layer-normed before whitening)")
        return self._zca.inverse_transform(x.float())


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation (RandomCrop(pad 4, reflect) + horizontal flip), batched."""
    n, _, h, w = x.shape
    padded = F.pad(x, [pad] * 4, mode="reflect")
    tx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    ty = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + tx.view(n, 1, 1)).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + ty.view(n, 1, 1)).expand(n, h, w)
    idx = (rows * (w + 2 * pad) + cols).reshape(n, 1, h * w).expand(-1, x.shape[1], -1)
    out = padded.flatten(2).gather(2, idx).view_as(x)
    flip = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(x.device).view(n, 1, 1, 1)
    return torch.where(flip, out.flip(3), out)


# --- the augmentation registry: TrainProtocol.augment -> a batched augmenter -----------------------------
class AugmentSpec(TypingProtocol):
    """The fields of :class:`harness.engine.TrainProtocol` an augmentation reads."""

    augment: str
    dsa_strategy: str
    dc_strategy: str


Augmenter = Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]
"""``(x, generator, models) -> x``: ``x`` is ``models`` batches stacked along dim 0; 1 for one model."""

AUGMENTS: Registry[Callable[[AugmentSpec, bool], Augmenter]] = Registry("augmentation")


def register_augment(name: str):
    """Register ``factory(spec, ensemble) -> Augmenter`` under a ``TrainProtocol.augment`` name."""
    return AUGMENTS.register(name)


def list_augments() -> list[str]:
    """Every augmentation name a protocol may give: those with an in-memory (batched) form, a streamed
    (per-sample) form, or both (:func:`create_augment`, :func:`create_stream_augment`)."""
    return sorted(set(AUGMENTS.names()) | set(STREAM_AUGMENTS.names()))


def create_augment(spec: AugmentSpec, *, ensemble: bool = False) -> Augmenter:
    """The augmenter ``spec.augment`` names; ``ensemble=True`` for :func:`harness.engine.ensemble.fit_ensemble`."""
    if spec.augment not in AUGMENTS:
        raise ConfigError(f"augmentation {spec.augment!r} has no in-memory form (it is for streamed image folders, "
                          f"harness.distributed); in-memory sets take one of {AUGMENTS.names()}")
    return AUGMENTS.get(spec.augment)(spec, ensemble)


def _one_model(fn: Callable[[torch.Tensor, torch.Generator], torch.Tensor], what: str) -> Augmenter:
    def aug(x: torch.Tensor, g: torch.Generator, models: int = 1) -> torch.Tensor:
        if models != 1:
            raise ConfigError(f"augmentation {what}: the sequential form takes one model's batch, got {models}")
        return fn(x, g)
    return aug


@register_augment("none")
def _augment_none(spec: AugmentSpec, ensemble: bool) -> Augmenter:
    return lambda x, g, models=1: x


@register_augment("dsa")
def _augment_dsa(spec: AugmentSpec, ensemble: bool) -> Augmenter:
    """VICO's DSA, mode ``S`` (one op group per call): per model in an ensemble (``EnsembleDSA``)."""
    if ensemble:
        edsa = EnsembleDSA(spec.dsa_strategy)
        return lambda x, g, models=1: edsa(x, models, g)
    return _one_model(DSA(spec.dsa_strategy), "dsa")


@register_augment("idc")
def _augment_idc(spec: AugmentSpec, ensemble: bool) -> Augmenter:
    """IDC's ``DiffAug(dsa_strategy, batch=False)`` (:class:`IDCAugment`); the op choice is per model."""
    return IDCAugment(spec.dsa_strategy)


@register_augment("dc")
def _augment_dc(spec: AugmentSpec, ensemble: bool) -> Augmenter:
    """DC's augmentation; its crop fill is a per-batch mean, so an ensemble batch is split per model."""
    dc = DCAugment(spec.dc_strategy)
    return lambda x, g, models=1: dc(x, g) if models == 1 else torch.cat([dc(c, g) for c in x.chunk(models)])


@register_augment("crop_flip")
def _augment_crop_flip(spec: AugmentSpec, ensemble: bool) -> Augmenter:
    return lambda x, g, models=1: crop_flip(x, g)


def hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal flip of each image with probability 0.5 (one draw per image), batched."""
    flip = (torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5).to(x.device)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


@register_augment("flip")
def _augment_flip(spec: AugmentSpec, ensemble: bool) -> Augmenter:
    return lambda x, g, models=1: hflip(x, g)


# --- streamed forms: one decoded image at a time, in DataLoader workers (harness.distributed) --------
StreamAugmenter = Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]
"""``(x, generator, size) -> view``: one decoded image ``(C, H, W)`` in [0, 1] of any size -> a ``(C, size, size)``
training view. The generator is seeded per (seed, epoch, sample), so a view does not depend on the worker."""

STREAM_AUGMENTS: Registry[StreamAugmenter] = Registry("streamed augmentation")


def register_stream_augment(name: str):
    """Register the streamed form of the ``TrainProtocol.augment`` name ``name``."""
    return STREAM_AUGMENTS.register(name)


def list_stream_augments() -> list[str]:
    return STREAM_AUGMENTS.names()


def create_stream_augment(name: str) -> StreamAugmenter:
    """The streamed form of the augmentation ``name`` (a ``TrainProtocol.augment``); ConfigError for one that has
    none (DSA, IDC, DC: batched on the device, not per image in a worker)."""
    if name not in STREAM_AUGMENTS:
        raise ConfigError(f"augmentation {name!r} has no streamed form (streamed image folders take one of "
                          f"{STREAM_AUGMENTS.names()})")
    return STREAM_AUGMENTS.get(name)


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear resize of one ``(C, H, W)`` image with antialiasing (a no-op at the same size)."""
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]


def short_side_center(x: torch.Tensor, short: int, size: int) -> torch.Tensor:
    """Resize the shorter side to ``short`` (aspect kept), then the central ``size x size`` crop."""
    h, w = x.shape[-2:]
    s = short / min(h, w)
    x = resize(x, max(short, round(h * s)), max(short, round(w * s)))
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[:, top:top + size, left:left + size]


def eval_view(x: torch.Tensor, size: int) -> torch.Tensor:
    """The test view: shorter side to ``size / 0.875``, central crop ``size`` (224 -> 256 -> 224)."""
    return short_side_center(x, round(size / 0.875), size)


def random_resized_crop(x: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """torchvision's ``RandomResizedCrop(size, scale=(0.08, 1), ratio=(3/4, 4/3))``: up to 10 tries of an area
    fraction U[0.08, 1] and a log-uniform ratio, else the central crop."""
    h, w = x.shape[-2:]
    area = h * w
    for _ in range(10):
        target = area * (0.08 + 0.92 * float(torch.rand((), generator=g)))
        log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(torch.rand((), generator=g))
        r = math.exp(log_r)
        cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            return resize(x[:, top:top + ch, left:left + cw], size, size)
    return short_side_center(x, size, size)  # torchvision's fallback: the central crop


def _maybe_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x.flip(-1) if bool(torch.rand((), generator=g) < 0.5) else x


@register_stream_augment("none")
def _stream_none(x: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """Shorter side to ``size``, central crop."""
    return short_side_center(x, size, size)


@register_stream_augment("flip")
def _stream_flip(x: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """``none`` + horizontal flip (p 0.5)."""
    return _maybe_flip(short_side_center(x, size, size), g)


@register_stream_augment("crop_flip")
def _stream_crop_flip(x: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """The CIFAR recipe on a streamed image: ``none``, zero-pad ``size // 8``, random ``size`` crop, flip."""
    x = short_side_center(x, size, size)
    p = size // 8
    x = F.pad(x, (p, p, p, p))
    top, left = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=g))
    return _maybe_flip(x[:, top:top + size, left:left + size], g)


@register_stream_augment("rrc_flip")
def _stream_rrc_flip(x: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """The ImageNet recipe: random-resized crop (scale 0.08-1, ratio 3/4-4/3) + flip."""
    return _maybe_flip(random_resized_crop(x, g, size), g)
