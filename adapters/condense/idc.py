"""IDC: Dataset Condensation via Efficient Synthetic-Data Parameterization (Kim et al., ICML 2022).

Multi-formation: the stored tensor S (pixel space [0, 1], ``ipc`` per class) is decoded with factor
f by :func:`condensed.decode.decode_multiformation` (each stored image -> f^2 upsampled crops), so a
budget of ``ipc`` stored images yields ``ipc * f^2`` training images. Objective per class c (conv
weights only: 1-D biases/norms and 2-D FC weights are skipped, IDC ``--bias False --fc False``):

    L_c(S) = sum_{conv layers l} dist( grad_l CE(theta; A_omega(B_c^real)), grad_l CE(theta; A_omega(dec(S_c))) ),

``dist`` = ``mse`` sum (x - y)^2 (colour data) or ``l1`` sum |x - y| (MNIST/FashionMNIST), or the
per-row ``cos`` distance of DC. A_omega = normalize then DSA with one parameter set for the
concatenated real + synthetic batch (IDC ``DiffAug(batch=True)``, which always applies every listed
group for ``color_crop_cutout``; here mode ``M``). |B_c^real| = 64, the decoded synthetic batch is
subsampled to at most 128.

Loop (``condense.py``): each outer iteration draws a fresh ConvNet (SGD lr 0.01, momentum 0.9,
wd 5e-4), clamps S to [0, 1], then ``inner_loop`` (100) times: one image step **per class**
(SGD, momentum 0.5; the momentum buffer moves other classes' rows too), then the network is
trained on ``n_data`` **real** images (500; 2000 for CIFAR) with per-sample DSA (no cutout) and
CutMix (p 0.5, Beta(1, 1)). Default lr_img follows ``--reproduce`` and ``tune_lr_img``:
(5e-3 with mse on colour, 1e-4 with l1 on grey) x ipc / 10. Init: with f > 1 the reference's
``mix``: ipc*f^2 real images per class (seeded here; the reference takes the first ones), each
resized (nearest) to H/f and tiled f x f in the order the decoder reads them back.
The result is stored un-decoded, in pixel space, with its factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adapters.condense.base import (
    CondenseConfig,
    CondenseContext,
    Condenser,
    class_ce,
    new_generator,
    real_init,
    register_condenser,
)
from adapters.condense.dc import distance_wb
from condensed.decode import decode_multiformation, decode_per_class
from harness.augment import DSA, cutmix
from harness.errors import ConfigError

IDC_DISTS = ("", "mse", "l1", "cos")


@dataclass(frozen=True)
class IDCConfig(CondenseConfig):
    iterations: int = 2000
    init: str = "real"
    factor: int = 2
    lr_img: float = 0.0  # 0: the reference's tuned value (see module docstring)
    dist: str = ""  # "": mse for colour data, l1 for grey
    inner_loop: int = 100
    batch_real: int = 64
    batch_syn_max: int = 128
    lr_net: float = 0.01
    momentum_net: float = 0.9
    weight_decay_net: float = 5e-4
    n_data: int = 0  # real images per network update; 0: 2000 for CIFAR, else 500
    mix_p: float = 0.5
    dsa_strategy: str = "color_crop_cutout"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.factor < 1:
            raise ConfigError(f"factor must be >= 1, got {self.factor}")
        if self.dist not in IDC_DISTS:
            raise ConfigError(f"dist {self.dist!r}: expected one of {IDC_DISTS[1:]}")
        if self.inner_loop < 1:
            raise ConfigError(f"inner_loop must be >= 1, got {self.inner_loop}")


def idc_grad_distance(gw_real: list[torch.Tensor], gw_syn: list[torch.Tensor], dist: str) -> torch.Tensor:
    """Sum of ``dist`` over conv-weight gradients only (4-D tensors)."""
    total = gw_syn[0].new_zeros(())
    for r, s in zip(gw_real, gw_syn):
        if r.ndim != 4:
            continue
        if dist == "mse":
            total = total + torch.sum((s - r) ** 2)
        elif dist == "l1":
            total = total + torch.sum((s - r).abs())
        else:
            total = total + distance_wb(r, s)
    return total


@register_condenser("idc")
class IDC(Condenser):
    config_cls = IDCConfig
    space = "pixel"

    def factor(self, config: CondenseConfig) -> int:
        return int(config.factor)

    # -- resolved settings ---------------------------------------------------------------------
    def dist(self, ctx: CondenseContext) -> str:
        return ctx.config.dist or ("mse" if ctx.real.channels == 3 else "l1")

    def lr_img(self, ctx: CondenseContext) -> float:
        if ctx.config.lr_img:
            return ctx.config.lr_img
        base = 5e-3 if ctx.real.channels == 3 else 1e-4
        return base * ctx.ipc / 10

    def n_data(self, ctx: CondenseContext) -> int:
        return ctx.config.n_data or (2000 if ctx.dataset.startswith("cifar") else 500)

    def optimizer(self, syn: torch.Tensor, ctx: CondenseContext) -> torch.optim.Optimizer:
        return torch.optim.SGD([syn], lr=self.lr_img(ctx), momentum=ctx.config.momentum_img)

    # -- pieces ------------------------------------------------------------------------------
    def init_synthetic(self, ctx: CondenseContext, g: torch.Generator) -> torch.Tensor:
        c, h, w = ctx.geometry
        f = ctx.config.factor
        if ctx.config.init == "noise":
            x = torch.randn(ctx.num_classes * ctx.ipc, c, h, w, generator=g, device=g.device) / 4 + 0.5
            return x.clamp(0, 1)
        per_class = real_init(ctx, g, ctx.ipc * f * f)
        out = []
        s = math.ceil(h / f)
        for xc in per_class:
            pix = (xc * ctx.std + ctx.mean).clamp(0, 1)
            if f == 1:
                out.append(pix)
                continue
            small = F.interpolate(pix, size=(s, s), mode="nearest")
            canvas = torch.full((ctx.ipc, c, s * f, s * f), 0.5, device=ctx.device)
            for a in range(f):
                for b in range(f):
                    k = a * f + b  # crop (a, b) of stored image i is decoded in block k: real image k*ipc + i
                    canvas[:, :, a * s:(a + 1) * s, b * s:(b + 1) * s] = small[k * ctx.ipc:(k + 1) * ctx.ipc]
            out.append(canvas[:, :, :h, :w])
        return torch.cat(out)

    def decoded_pixels(self, ctx: CondenseContext, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:

        return decode_per_class(syn.detach().cpu(), ctx.labels(), ctx.config.factor, ctx.num_classes)

    def _class_loss(self, ctx: CondenseContext, net: nn.Module, syn: torch.Tensor, c: int,
                    g: torch.Generator, dsa: DSA) -> torch.Tensor:
        cfg = ctx.config
        img_real = ctx.real_batch(c, cfg.batch_real, g)
        lab = torch.full((ctx.ipc,), c, dtype=torch.long)
        dec, _ = decode_multiformation(syn[c * ctx.ipc:(c + 1) * ctx.ipc], lab, cfg.factor)
        if dec.shape[0] > cfg.batch_syn_max:
            dec = dec[torch.randperm(dec.shape[0], generator=g, device=g.device)[:cfg.batch_syn_max].to(dec.device)]
        x = torch.cat([img_real, (dec - ctx.mean) / ctx.std])
        s = int(torch.randint(2**62, (1,), generator=g, device=g.device))
        x = dsa(x, new_generator(ctx.device, s), siamese=True)  # one parameter set for real + synthetic
        xr, xs = x[:img_real.shape[0]], x[img_real.shape[0]:]
        params = [p for p in net.parameters() if p.requires_grad]
        gw_real = [t.detach() for t in torch.autograd.grad(class_ce(net, xr, c), params)]
        gw_syn = list(torch.autograd.grad(class_ce(net, xs, c), params, create_graph=True))
        return idc_grad_distance(gw_real, gw_syn, self.dist(ctx))

    def _train_net_real(self, ctx: CondenseContext, net: nn.Module, opt: torch.optim.Optimizer,
                        g: torch.Generator) -> None:
        cfg = ctx.config
        groups = [s for s in cfg.dsa_strategy.split("_") if s and not (s == "cutout" and cfg.mix_p > 0)]
        dsa = DSA("_".join(groups), mode="M") if groups else None
        n_total, seen = ctx.real_x.shape[0], 0
        labels = ctx.real.labels
        net.train()
        while seen < self.n_data(ctx):
            idx = torch.randint(n_total, (cfg.batch_real,), generator=g, device=g.device).to(ctx.device)
            x, y = ctx.real_x[idx], labels[idx]
            if dsa is not None:
                x = dsa(x, g)
            if cfg.mix_p > 0 and float(torch.rand(1, generator=g, device=g.device)) < cfg.mix_p:
                x, partner, lam = cutmix(x, g)
                out = net(x)
                loss = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[partner])
            else:
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += cfg.batch_real

    def step(self, ctx: CondenseContext, syn: torch.Tensor, opt: torch.optim.Optimizer, g: torch.Generator,
             seed: int) -> float:
        cfg = ctx.config
        net = ctx.build_model(seed)
        net.train()
        opt_net = torch.optim.SGD(net.parameters(), lr=cfg.lr_net, momentum=cfg.momentum_net,
                                  weight_decay=cfg.weight_decay_net)
        dsa = DSA(cfg.dsa_strategy, mode="M")
        with torch.no_grad():
            syn.clamp_(0, 1)
        total = 0.0
        for _ in range(cfg.inner_loop):
            for c in range(ctx.num_classes):
                loss = self._class_loss(ctx, net, syn, c, g, dsa)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            self._train_net_real(ctx, net, opt_net, g)
        return total / (cfg.inner_loop * ctx.num_classes)

    def probe_loss(self, ctx: CondenseContext, syn: torch.Tensor, seed: int) -> float:
        net = ctx.build_model(seed)
        net.train()
        g = new_generator(ctx.device, seed)
        dsa = DSA(ctx.config.dsa_strategy, mode="M")
        x = syn.detach().clamp(0, 1).requires_grad_(True)
        return sum(float(self._class_loss(ctx, net, x, c, g, dsa).detach())
                   for c in range(ctx.num_classes)) / ctx.num_classes
