"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Each iteration draws a fresh randomly initialised network psi_theta (train mode, every parameter
frozen; psi = ``embed``, the features before the classifier) and takes one SGD step (lr_img 1.0,
momentum 0.5) on the per-class squared distance between mean embeddings (linear-kernel MMD)

    L(S) = sum_c || mean_{x in B_c^real} psi(A_{omega_c}(x)) - mean_{s in S_c} psi(A_{omega_c}(s)) ||^2,

with |B_c^real| = 256 and one siamese DSA draw omega_c per class shared by both batches (see
:mod:`adapters.condense.dsa`). BatchNorm models embed all classes' real (and all synthetic) images
in one forward pass, as ``main_DM.py`` does. No network is ever trained; DM works at any IPC.
Defaults: 20000 iterations, real init.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from adapters.condense.base import (
    CondenseConfig,
    CondenseContext,
    Condenser,
    new_generator,
    real_init,
    register_condenser,
)
from harness.augment import DSA
from harness.models import embed as model_embed
from harness.models import has_running_stats


@dataclass(frozen=True)
class DMConfig(CondenseConfig):
    iterations: int = 20000
    init: str = "real"
    lr_img: float = 1.0
    batch_real: int = 256


@register_condenser("dm")
class DM(Condenser):
    config_cls = DMConfig

    def init_synthetic(self, ctx: CondenseContext, g: torch.Generator) -> torch.Tensor:
        if ctx.config.init == "real":
            return torch.cat(real_init(ctx, g, ctx.ipc))
        c, h, w = ctx.geometry
        return torch.randn(ctx.num_classes * ctx.ipc, c, h, w, generator=g, device=g.device)

    def frozen_net(self, ctx: CondenseContext, seed: int) -> nn.Module:
        net = ctx.build_model(seed)
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def loss(self, ctx: CondenseContext, net: nn.Module, syn: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        dsa = DSA(ctx.dsa_strategy())
        reals, syns = [], []
        for c in range(ctx.num_classes):
            img_real = ctx.real_batch(c, ctx.config.batch_real, g)
            img_syn = syn[c * ctx.ipc:(c + 1) * ctx.ipc]
            s = int(torch.randint(2**62, (1,), generator=g, device=g.device))
            reals.append(dsa(img_real, new_generator(ctx.device, s), siamese=True))
            syns.append(dsa(img_syn, new_generator(ctx.device, s), siamese=True))
        loss = syn.new_zeros(())
        if has_running_stats(net):  # BN: one forward over all classes so the batch statistics see every class
            er = model_embed(net, torch.cat(reals)).detach().split([r.shape[0] for r in reals])
            es = model_embed(net, torch.cat(syns)).split(ctx.ipc)
            for r, s_ in zip(er, es):
                loss = loss + torch.sum((r.mean(0) - s_.mean(0)) ** 2)
            return loss
        for r, s_ in zip(reals, syns):
            loss = loss + torch.sum((model_embed(net, r).detach().mean(0) - model_embed(net, s_).mean(0)) ** 2)
        return loss

    def step(self, ctx: CondenseContext, syn: torch.Tensor, opt: torch.optim.Optimizer, g: torch.Generator,
             seed: int) -> float:
        net = self.frozen_net(ctx, seed)
        loss = self.loss(ctx, net, syn, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach()) / ctx.num_classes

    def probe_loss(self, ctx: CondenseContext, syn: torch.Tensor, seed: int) -> float:
        net = self.frozen_net(ctx, seed)
        with torch.no_grad():
            return float(self.loss(ctx, net, syn.detach(), new_generator(ctx.device, seed))) / ctx.num_classes
