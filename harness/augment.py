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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.errors import ConfigError


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


# Each op: (x, draws, generator, params) -> x. ``draws`` is the number of parameter sets: N, or 1 (siamese).
def dsa_scale(x, k, g, p: DSAParams):
    sx = _rand(k, g, x.device) * (p.scale - 1.0 / p.scale) + 1.0 / p.scale
    sy = _rand(k, g, x.device) * (p.scale - 1.0 / p.scale) + 1.0 / p.scale
    theta = torch.zeros(k, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, _expand(theta, x.shape[0]))


def dsa_rotate(x, k, g, p: DSAParams):
    ang = (_rand(k, g, x.device) - 0.5) * 2 * p.rotate / 180 * math.pi
    c, s = torch.cos(ang), torch.sin(ang)
    theta = torch.zeros(k, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = c, -s, s, c
    return _affine(x, _expand(theta, x.shape[0]))


def dsa_flip(x, k, g, p: DSAParams):
    f = _expand((_rand(k, g, x.device) < p.prob_flip).view(k, 1, 1, 1), x.shape[0])
    return torch.where(f, x.flip(3), x)


def dsa_brightness(x, k, g, p: DSAParams):
    b = _expand(_rand(k, g, x.device).view(k, 1, 1, 1), x.shape[0])
    return x + (b.to(x.dtype) - 0.5) * p.brightness


def dsa_saturation(x, k, g, p: DSAParams):
    s = _expand(_rand(k, g, x.device).view(k, 1, 1, 1), x.shape[0]).to(x.dtype)
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (s * p.saturation) + m


def dsa_contrast(x, k, g, p: DSAParams):
    c = _expand(_rand(k, g, x.device).view(k, 1, 1, 1), x.shape[0]).to(x.dtype)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (c + p.contrast) + m


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
    ch, cw = int(h * p.cutout + 0.5), int(w * p.cutout + 0.5)
    ox = _expand(_randint(0, h + (1 - ch % 2), k, g, x.device), n).view(n, 1, 1)
    oy = _expand(_randint(0, w + (1 - cw % 2), k, g, x.device), n).view(n, 1, 1)
    r = torch.arange(h, device=x.device).view(1, h, 1)
    c = torch.arange(w, device=x.device).view(1, 1, w)
    # the reference clamps the square's indices to the image; the erased set is the same as this box test
    lo_r, lo_c = (ox - ch // 2).clamp(0, h - 1), (oy - cw // 2).clamp(0, w - 1)
    hi_r, hi_c = (ox - ch // 2 + ch - 1).clamp(0, h - 1), (oy - cw // 2 + cw - 1).clamp(0, w - 1)
    inside = (r >= lo_r) & (r <= hi_r) & (c >= lo_c) & (c <= hi_c)
    return x * (~inside).unsqueeze(1).to(x.dtype)


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


# --- the DC paper's augmentation (VICO utils.augment), batched -----------------------------------
@dataclass(frozen=True)
class DCAugParams:
    crop: int = 4
    scale: float = 0.2
    rotate: int = 45
    noise: float = 0.001


class DCAugment:
    """DC's evaluation augmentation: one op per image from the strategy (e.g. ``crop_scale_rotate``).

    crop: shift by up to ``crop`` px with the batch's channel means as fill; scale: nearest resize by
    U[0.8, 1.2] per axis, centred on a zero canvas; rotate: an integer angle in [-45, 45) about the
    centre, filled with the mean of the channel means (the reference uses scipy's cubic spline on the
    CPU per image; this uses bilinear sampling on the device); noise: + 0.001 N(0, 1).
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

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        dev, p = x.device, self.params
        choice = torch.randint(len(self.ops), (n,), generator=generator, device=dev)
        mean = x.mean(dim=(0, 2, 3)).view(1, c, 1, 1)
        out = x
        for k, op in enumerate(self.ops):
            sel = (choice == k).view(n, 1, 1, 1)
            if op == "crop":
                r = torch.randint(2 * p.crop, (n,), generator=generator, device=dev)
                cc = torch.randint(2 * p.crop, (n,), generator=generator, device=dev)
                y = _shift(x, r - p.crop, cc - p.crop, fill=mean)
            elif op == "scale":
                fh = torch.rand(n, generator=generator, device=dev) * 2 * p.scale + 1 - p.scale
                fw = torch.rand(n, generator=generator, device=dev) * 2 * p.scale + 1 - p.scale
                y = _dc_scale(x, (fh * h).long(), (fw * h).long())
            elif op == "rotate":
                deg = torch.randint(-p.rotate, p.rotate, (n,), generator=generator, device=dev).to(x.dtype)
                a = deg / 180 * math.pi
                theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
                theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
                fill = mean.mean()
                y = _affine(x - fill, theta) + fill
            else:
                y = x + p.noise * torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype)
            out = torch.where(sel, y, out)
        return out


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


# --- ZCA (as MTT/KIP: kornia ZCAWhitening, eps 0.1, fitted on normalized real training images) -----
class ZCA:
    """ZCA whitening fitted on the real training split; ``forward`` whitens, ``inverse`` undoes it."""

    def __init__(self, eps: float = 0.1) -> None:
        import kornia

        self.eps = eps
        self._zca = kornia.enhance.ZCAWhitening(eps=eps, compute_inv=True)

    def fit(self, normalized_train: torch.Tensor) -> ZCA:
        self._zca.fit(normalized_train.float())
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._zca(x.float(), include_fit=False)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
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
