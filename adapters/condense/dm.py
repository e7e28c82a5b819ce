"""DM: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Each iteration draws a fresh randomly initialised network psi_theta (train mode, every parameter
frozen; psi = ``embed``, the features before the classifier) and takes one SGD step (lr_img 1.0,
momentum 0.5) on the per-class squared distance between mean embeddings (linear-kernel MMD)

    L(S) = sum_c || mean_{x in B_c^real} psi(A_{omega_c}(x)) - mean_{s in S_c} psi(A_{omega_c}(s)) ||^2,

with |B_c^real| = 256 and one siamese DSA draw omega_c per class shared by both batches (see
:mod:`adapters.condense.dsa`). BatchNorm models embed all classes' real (and all synthetic) images
in one forward pass, as ``main_DM.py`` does. No network is ever trained; DM works at any IPC.
Defaults: 20000 iterations, real init.

Engine (:class:`adapters.condense.base.CondenseEngine`): the per-class means are the same numbers whether the
classes go through the network one by one (``sequential``: ``main_DM.py``'s ConvNet branch, lines 160-174)
or concatenated in one forward pass for the real images and one for the synthetic ones (``batched``, the
default): without batch statistics (checked: :func:`harness.models.has_running_stats`) a sample's embedding
does not depend on its batch, and each class keeps its own siamese DSA draw, applied before concatenation.
The real forward runs without autograd (the real branch is detached in the reference too). ``bf16`` runs the
embedding under autocast and takes the means in fp32; ``compile`` compiles the embedding once per run.
"""

from __future__ import annotations

from collections.abc import Callable
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

BATCH_CAP = 2560
"""Most images per forward pass on the ``batched`` path (whole classes; a class larger than this goes alone):
all of MNIST's or CIFAR-10's real batches (10 x 256) at once, bounded memory for many classes."""


def embed_classes(emb: Callable[[torch.Tensor], torch.Tensor], xs: list[torch.Tensor], cap: int | None
                  ) -> list[torch.Tensor]:
    """``[emb(x) for x in xs]`` with consecutive classes concatenated into forward passes of at most ``cap``
    images (0: one class per pass; None: everything in one pass). Per-sample models give the same rows."""
    out: list[torch.Tensor] = []
    group: list[torch.Tensor] = []

    def flush() -> None:
        if group:
            out.extend(emb(torch.cat(group)).split([x.shape[0] for x in group]))
            group.clear()

    for x in xs:
        if group and cap is not None and sum(g.shape[0] for g in group) + x.shape[0] > cap:
            flush()
        group.append(x)
    flush()
    return out


@dataclass(frozen=True)
class DMConfig(CondenseConfig):
    iterations: int = 20000
    init: str = "real"
    lr_img: float = 1.0
    batch_real: int = 256


@register_condenser("dm")
class DM(Condenser):
    config_cls = DMConfig
    engine_support = True
    batchable = True

    def run_flops(self, ctx: CondenseContext) -> float | None:
        """Forward FLOPs of the real batches plus forward + backward (3x) of the synthetic images, per iteration."""
        f = self.sample_flops(ctx)
        if f is None:
            return None
        real = sum(min(ctx.config.batch_real, int(i.numel())) for i in ctx.class_idx)
        return float(f) * ctx.config.iterations * (real + 3 * ctx.num_classes * ctx.ipc)

    def init_synthetic(self, ctx: CondenseContext, g: torch.Generator) -> torch.Tensor:
        if ctx.config.init == "real":
            return torch.cat(real_init(ctx, g, ctx.ipc))
        c, h, w = ctx.geometry
        return torch.randn(ctx.num_classes * ctx.ipc, c, h, w, generator=g, device=g.device)

    def frozen_net(self, ctx: CondenseContext, seed: int) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """A fresh network from ``seed`` in train mode with frozen parameters, and its embedding function."""
        net, emb = ctx.network(seed, "embed")
        net.train()
        for p in net.parameters():
            p.requires_grad_(False)
        return net, emb

    def loss(self, ctx: CondenseContext, net: nn.Module, syn: torch.Tensor, g: torch.Generator,
             emb: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """sum_c ||mean psi(A(B_c^real)) - mean psi(A(S_c))||^2 under ``ctx.engine`` (``emb``: psi, default
        :func:`harness.models.embed` of ``net``)."""
        dsa = DSA(ctx.dsa_strategy())
        reals, syns = [], []
        for c in range(ctx.num_classes):
            img_real = ctx.real_batch(c, ctx.config.batch_real, g)
            img_syn = syn[c * ctx.ipc:(c + 1) * ctx.ipc]
            s = int(torch.randint(2**62, (1,), generator=g, device=g.device))
            reals.append(dsa(img_real, new_generator(ctx.device, s), siamese=True))
            syns.append(dsa(img_syn, new_generator(ctx.device, s), siamese=True))
        if not ctx.engine.is_exact:
            return self._fast_loss(ctx, net, reals, syns, emb if emb is not None else (lambda x: model_embed(net, x)))
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

    def _fast_loss(self, ctx: CondenseContext, net: nn.Module, reals: list[torch.Tensor], syns: list[torch.Tensor],
                   emb: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The same loss, batched (``batched`` path or BN: two forwards in all) or per class, bf16 where asked."""
        cap = BATCH_CAP if ctx.engine.batched else 0
        if has_running_stats(net):  # BN: the batch statistics must see every class, as in the reference
            cap = None
        with ctx.autocast():
            with torch.no_grad():
                er = embed_classes(emb, reals, cap)
            es = embed_classes(emb, syns, cap)
        mr = torch.stack([e.float().mean(0) for e in er])
        ms = torch.stack([e.float().mean(0) for e in es])
        return torch.sum((mr - ms) ** 2)

    def step(self, ctx: CondenseContext, syn: torch.Tensor, opt: torch.optim.Optimizer, g: torch.Generator,
             seed: int) -> float:
        net, emb = self.frozen_net(ctx, seed)
        loss = self.loss(ctx, net, syn, g, emb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach()) / ctx.num_classes

    def probe_loss(self, ctx: CondenseContext, syn: torch.Tensor, seed: int) -> float:
        net, emb = self.frozen_net(ctx, seed)
        with torch.no_grad():
            return float(self.loss(ctx, net, syn.detach(), new_generator(ctx.device, seed), emb)) / ctx.num_classes
