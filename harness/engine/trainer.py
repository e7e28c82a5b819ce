"""The sequential trainer: one model, one in-memory tensor set, one :class:`TrainProtocol`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any
from typing import Protocol as TypingProtocol

import torch
from torch import nn

from harness.augment import create_augment, cutmix
from harness.engine.losses import LossWeighting, batch_loss, get_loss, get_loss_weighting
from harness.engine.protocol import TrainProtocol
from harness.engine.schedules import ScheduledSGD
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


class Trainer:
    """Trains one model on an in-memory tensor set under a :class:`TrainProtocol`.

    ``images`` are already in the model's input space (normalized or ZCA) on the training device;
    ``targets`` are hard labels (N,) or soft labels (N, K). Randomness (order, augmentation, CutMix)
    comes from one generator seeded by ``seed``. The loss, the schedule and the augmentation are the
    protocol's registered ones (:mod:`harness.engine.losses`, :mod:`harness.engine.schedules`,
    :mod:`harness.augment`). ``compile=True`` runs the forward through ``torch.compile`` (``self.net``;
    ``self.model`` stays the plain module, so checkpoints have the usual keys).
    """

    def __init__(self, model: nn.Module, protocol: TrainProtocol, *, seed: int,
                 hooks: Sequence[TrainHook] = (), progress: Callable[[int, int], None] | None = None,
                 compile: bool = False) -> None:
        self.model, self.protocol, self.seed = model, protocol, seed
        self.net = torch.compile(model) if compile else model  # shares the parameters
        self.hooks, self.progress = list(hooks), progress
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.sgd = ScheduledSGD(protocol, model.parameters())
        self.epoch = 0  # epochs completed
        self.step = 0
        self.augmenter = create_augment(protocol)  # harness.augment registry, keyed by protocol.augment
        self.loss = get_loss(protocol.loss)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.sgd.optimizer

    @property
    def lr(self) -> float:
        return self.sgd.lr

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return self.augmenter(x, self.generator, 1)

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
        self.sgd.steps_total = steps_total
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                    if p.precision == "bf16" else nullcontext())
        last = epochs_total if stop_after is None else min(stop_after, epochs_total)
        while self.epoch < last:
            ep = self.epoch
            model.train()  # every epoch: a hook may have run an eval pass at the last epoch's end
            order = torch.randperm(n, generator=g, device=g.device).to(images.device)
            for start in range(0, n, p.batch_size):
                if self.step >= steps_total:  # an iteration budget ends inside its last pass
                    break
                idx = order[start:start + p.batch_size]
                x, y = self.augment(images[idx]), targets[idx]
                self.sgd.begin_step(ep, self.step)
                use_mix = p.cutmix_p > 0 and float(torch.rand(1, generator=g, device=g.device)) < p.cutmix_p
                w = None if weighting is None else sample_weights[idx]
                with autocast:
                    if use_mix:
                        x, partner, lam = cutmix(x, g, p.cutmix_beta)
                        logits = self.net(x)
                        loss = batch_loss(self.loss, logits, y, weighting=weighting, weights=w,
                                          partner_y=y[partner], lam=lam)
                    else:
                        logits = self.net(x)
                        loss = batch_loss(self.loss, logits, y, weighting=weighting, weights=w)
                self.sgd.zero_grad()
                loss.backward()
                self.sgd.step()
                self.step += 1
                for h in self.hooks:
                    h.on_batch(ep, idx, logits.detach().float(), labels[idx])
            self.epoch += 1
            self.sgd.end_epoch(ep, self.step)  # e.g. VICO: lr x0.1 with a fresh optimiser
            for h in self.hooks:
                h.on_epoch_end(ep, self)
            if self.progress is not None:
                self.progress(self.epoch, epochs_total)
        return model

    # resumability: everything needed to continue from an epoch boundary
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.sgd.state_dict(), "lr": self.sgd.lr,
                "epoch": self.epoch, "step": self.step, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.sgd.load_state_dict(state["optimizer"])  # its learning rate included
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

