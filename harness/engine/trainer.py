"""The sequential trainer: one model, one in-memory tensor set, one :class:`TrainProtocol`."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any
from typing import Protocol as TypingProtocol

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import create_augment, cutmix
from harness.engine.losses import LossWeighting, get_loss_weighting, soft_cross_entropy
from harness.engine.protocol import TrainProtocol
from harness.errors import ConfigError


# --- the loop ------------------------------------------------------------------------------------
def check_sample_weights(p: TrainProtocol, sample_weights: torch.Tensor | None, n: int) -> LossWeighting | None:
    """The protocol's weighting when it has one (then ``sample_weights`` must be (n,)), else None."""
    if p.loss_weighting == "none":
        if sample_weights is not None:
            raise ConfigError(f"protocol {p.name}: sample_weights given but loss_weighting is 'none'")
        return None
    if sample_weights is None:
        raise ConfigError(f"protocol {p.name}: loss_weighting {p.loss_weighting!r} needs sample_weights "
                          "(index-aligned with the training images)")
    if tuple(sample_weights.shape) != (n,):
        raise ConfigError(f"protocol {p.name}: sample_weights of shape {tuple(sample_weights.shape)}, expected ({n},)")
    return get_loss_weighting(p.loss_weighting)


class TrainHook(TypingProtocol):
    """Called by :class:`Trainer`. ``index`` holds each sample's position in the training set."""

    def on_batch(self, epoch: int, index: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None: ...

    def on_epoch_end(self, epoch: int, trainer: Trainer) -> None: ...


def seeded_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model under a fixed seed without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def scheduled_lr(p: TrainProtocol, epoch: int, step: int, steps_total: int, current: float) -> float:
    """The learning rate at a step: cosine per iteration (to ``eta_min`` at ``steps_total``), multistep at
    fractions of the epochs (of the steps under ``iterations``; x ``gamma`` each), else ``current`` (VICO's
    halving is applied by the loop with a fresh optimiser)."""
    if p.schedule == "cosine":
        return p.eta_min + (p.lr - p.eta_min) * (1 + math.cos(math.pi * step / steps_total)) / 2
    if p.schedule == "multistep":
        if p.iterations is not None:
            drops = sum(step >= int(round(m * steps_total)) for m in p.milestones)
        else:
            drops = sum(epoch >= int(round(m * p.total_epochs)) for m in p.milestones)
        return p.lr * p.gamma**drops
    return current


class Trainer:
    """Trains one model on an in-memory tensor set under a :class:`TrainProtocol`.

    ``images`` are already in the model's input space (normalized or ZCA) on the training device;
    ``targets`` are hard labels (N,) or soft labels (N, K). Randomness (order, augmentation, CutMix)
    comes from one generator seeded by ``seed``.
    """

    def __init__(self, model: nn.Module, protocol: TrainProtocol, *, seed: int,
                 hooks: Sequence[TrainHook] = (), progress: Callable[[int, int], None] | None = None) -> None:
        self.model, self.protocol, self.seed = model, protocol, seed
        self.hooks, self.progress = list(hooks), progress
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.lr = protocol.lr
        self.optimizer = self._new_optimizer(self.lr)
        self.epoch = 0  # epochs completed
        self.step = 0
        p = protocol
        self.augmenter = create_augment(p)  # harness.augment registry, keyed by protocol.augment

    def _new_optimizer(self, lr: float) -> torch.optim.Optimizer:
        p = self.protocol
        return torch.optim.SGD(self.model.parameters(), lr=lr, momentum=p.momentum,
                               weight_decay=p.weight_decay, nesterov=p.nesterov)

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _lr_at(self, epoch: int, step: int, steps_total: int) -> float:
        return scheduled_lr(self.protocol, epoch, step, steps_total, self.lr)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.augmenter(x, self.generator, 1)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.protocol.loss
        if loss == "ce":
            return F.cross_entropy(logits, target)
        if loss == "soft_ce":
            return soft_cross_entropy(logits, target)
        return F.mse_loss(logits, target)

    def _losses(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample losses (B,) for a loss weighting (``ce`` or ``soft_ce``)."""
        if self.protocol.loss == "ce":
            return F.cross_entropy(logits, target, reduction="none")
        return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)

    def fit(self, images: torch.Tensor, targets: torch.Tensor, *, labels: torch.Tensor | None = None,
            stop_after: int | None = None, sample_weights: torch.Tensor | None = None) -> nn.Module:
        """Train from ``self.epoch`` to the protocol's end (or until ``stop_after`` epochs are done).

        The end: ``epochs`` passes, or exactly ``iterations`` optimiser steps (the last pass cut short).
        ``labels``: hard labels passed to hooks (default: ``targets`` or their argmax).
        ``sample_weights``: (N,) weights index-aligned with ``images``, required by (and only by) a
        protocol with a ``loss_weighting`` (e.g. TDDS's normalised scores of the kept samples).
        """
        p, g, model = self.protocol, self.generator, self.model
        n = images.shape[0]
        labels = labels if labels is not None else (targets if targets.ndim == 1 else targets.argmax(1))
        weighting = check_sample_weights(p, sample_weights, n)
        if sample_weights is not None:
            sample_weights = sample_weights.to(images.device)
        steps_total = p.steps_for(n)
        epochs_total = p.epochs_for(n)
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                    if p.precision == "bf16" else nullcontext())
        model.train()
        last = epochs_total if stop_after is None else min(stop_after, epochs_total)
        while self.epoch < last:
            ep = self.epoch
            order = torch.randperm(n, generator=g, device=g.device).to(images.device)
            for start in range(0, n, p.batch_size):
                if self.step >= steps_total:  # an iteration budget ends inside its last pass
                    break
                idx = order[start:start + p.batch_size]
                x, y = self.augment(images[idx]), targets[idx]
                if p.schedule in ("cosine", "multistep"):
                    self._set_lr(self._lr_at(ep, self.step, steps_total))
                use_mix = p.cutmix_p > 0 and float(torch.rand(1, generator=g, device=g.device)) < p.cutmix_p
                with autocast:
                    if weighting is not None:
                        if use_mix:
                            x, partner, lam = cutmix(x, g, p.cutmix_beta)
                            logits = model(x)
                            per = lam * self._losses(logits, y) + (1 - lam) * self._losses(logits, y[partner])
                        else:
                            logits = model(x)
                            per = self._losses(logits, y)
                        loss = weighting.apply(per, sample_weights[idx])
                    elif use_mix:
                        x, partner, lam = cutmix(x, g, p.cutmix_beta)
                        logits = model(x)
                        loss = lam * self._loss(logits, y) + (1 - lam) * self._loss(logits, y[partner])
                    else:
                        logits = model(x)
                        loss = self._loss(logits, y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.step += 1
                for h in self.hooks:
                    h.on_batch(ep, idx, logits.detach().float(), labels[idx])
            self.epoch += 1
            if p.schedule == "vico_half" and ep == p.epochs // 2 + 1:
                self.lr *= 0.1  # VICO: lr x0.1 with a fresh optimiser (momentum buffers dropped)
                self.optimizer = self._new_optimizer(self.lr)
            for h in self.hooks:
                h.on_epoch_end(ep, self)
            if self.progress is not None:
                self.progress(self.epoch, epochs_total)
        return model

    # resumability: everything needed to continue from an epoch boundary
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "lr": self.lr,
                "epoch": self.epoch, "step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.lr = state["lr"]
        self.optimizer = self._new_optimizer(self.lr)
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.generator.set_state(state["generator"])


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch: int = 1000, precision: str = "fp32") -> torch.Tensor:
    """Logits for ``images`` in eval mode, batched, without autograd."""
    model.eval()
    dev = next(model.parameters()).device
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    outs = []
    with torch.inference_mode(), ctx:
        for s in range(0, images.shape[0], batch):
            outs.append(model(images[s:s + batch].to(dev, non_blocking=True)).float())
    return torch.cat(outs)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000,
             precision: str = "fp32") -> float:
    logits = predict(model, images, batch, precision)
    return float((logits.argmax(1).cpu() == labels.cpu()).float().mean())

