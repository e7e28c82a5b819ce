"""One training loop and the named evaluation/training protocols.

A :class:`Protocol` is a frozen dataclass of everything that decides an accuracy. Presets:

- ``vico-dc``: VICO ``evaluate_synset`` for DC: SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256,
  ``epochs + 1`` epochs with lr x0.1 after epoch ``epochs // 2 + 1`` and a fresh optimiser;
  MNIST gets DC's ``crop_scale_rotate`` augmentation and 1000 epochs, other datasets none and 300.
- ``vico-dsa`` / ``dm``: the same optimiser, 1000 epochs, per-sample DSA
  (``color_crop_cutout_flip_scale_rotate``; no flip on digits).
- ``idc`` / ``yoco``: 1000 epochs, batch 64, SGD 0.01/0.9/5e-4, lr x0.2 at 2/3 and 5/6 of training,
  DSA ``color_crop_flip_scale_rotate`` (cutout replaced by CutMix p 0.5, Beta(1, 1)).
- ``ccs`` / ``tdds`` / ``dual``: full-data ResNet-18 training, 200 epochs, SGD 0.1 nesterov,
  wd 5e-4, cosine per iteration, random crop (pad 4, reflect) + flip; batch 256 / 100 / 128.

Every protocol reports the final epoch's test accuracy; nothing is selected on the test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from typing import Protocol as TypingProtocol

import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import DSA, DCAugment, crop_flip, cutmix
from harness.errors import ConfigError
from harness.registry import Registry

DIGIT_DATASETS = {"mnist", "mnist5k", "digits", "svhn"}
DC_AUG_DATASETS = {"mnist", "mnist5k"}


@dataclass(frozen=True)
class Protocol:
    name: str
    model: str = "convnet"
    epochs: int = 300
    extra_epoch: bool = False  # VICO runs ``epochs + 1`` epochs
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "vico_half"  # vico_half | multistep | cosine | constant
    milestones: tuple[float, ...] = ()  # multistep: fractions of the epochs
    gamma: float = 0.1
    eta_min: float = 0.0
    augment: str = "none"  # none | dsa | dc | crop_flip
    dsa_strategy: str = ""
    dc_strategy: str = ""
    cutmix_p: float = 0.0
    cutmix_beta: float = 1.0
    loss: str = "ce"  # ce (hard labels) | soft_ce | mse (soft labels)
    runs: int = 5
    test_batch: int = 1000
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    reported: str = "last"

    def __post_init__(self) -> None:
        checks = {
            "schedule": (self.schedule, {"vico_half", "multistep", "cosine", "constant"}),
            "augment": (self.augment, {"none", "dsa", "dc", "crop_flip"}),
            "loss": (self.loss, {"ce", "soft_ce", "mse"}),
            "precision": (self.precision, {"fp32", "bf16"}),
            "reported": (self.reported, {"last"}),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"protocol {self.name}: {key}={value!r}, expected one of {sorted(allowed)}")
        if self.epochs < 1 or self.batch_size < 1 or self.runs < 1:
            raise ConfigError(f"protocol {self.name}: epochs, batch_size and runs must be >= 1")
        if self.augment == "dsa" and not self.dsa_strategy:
            raise ConfigError(f"protocol {self.name}: augment='dsa' needs a dsa_strategy")

    @property
    def total_epochs(self) -> int:
        return self.epochs + (1 if self.extra_epoch else 0)

    def with_(self, **overrides: Any) -> Protocol:
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(f"protocol {self.name}: unknown keys {bad} (known: {sorted(known)})")
        return replace(self, **overrides)

    def describe(self) -> str:
        parts = [f"{self.name}: {self.model}, {self.total_epochs} epochs, batch {self.batch_size}",
                 f"SGD lr {self.lr} m {self.momentum} wd {self.weight_decay}{' nesterov' if self.nesterov else ''}",
                 f"schedule {self.schedule}"
                 + (f" at {[round(m, 3) for m in self.milestones]} x{self.gamma}" if self.milestones else ""),
                 f"aug {self.augment}" + (f" ({self.dsa_strategy or self.dc_strategy})"
                                          if self.augment in ("dsa", "dc") else ""),
                 *([f"cutmix p {self.cutmix_p}"] if self.cutmix_p else []),
                 f"loss {self.loss}", f"{self.precision}", "final-epoch test accuracy"]
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PROTOCOLS: Registry[Callable[[str], Protocol]] = Registry("protocol")


def register_protocol(name: str):
    return PROTOCOLS.register(name)


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


def get_protocol(name: str, dataset: str = "cifar10", **overrides: Any) -> Protocol:
    """The named preset as it applies to ``dataset`` (some presets depend on it), with overrides."""
    proto = PROTOCOLS.get(name)(dataset)
    return proto.with_(**overrides) if overrides else proto


def _dsa_strategy(dataset: str, full: str) -> str:
    return full.replace("_flip", "") if dataset in DIGIT_DATASETS else full


@register_protocol("vico-dc")
def _vico_dc(dataset: str) -> Protocol:
    aug = dataset in DC_AUG_DATASETS
    return Protocol("vico-dc", epochs=1000 if aug else 300, extra_epoch=True,
                    augment="dc" if aug else "none", dc_strategy="crop_scale_rotate" if aug else "")


@register_protocol("vico-dsa")
def _vico_dsa(dataset: str) -> Protocol:
    return Protocol("vico-dsa", epochs=1000, extra_epoch=True, augment="dsa",
                    dsa_strategy=_dsa_strategy(dataset, "color_crop_cutout_flip_scale_rotate"))


@register_protocol("dm")
def _dm(dataset: str) -> Protocol:
    return replace(_vico_dsa(dataset), name="dm")


@register_protocol("idc")
def _idc(dataset: str) -> Protocol:
    return Protocol("idc", epochs=1000, batch_size=64, schedule="multistep", milestones=(2 / 3, 5 / 6),
                    gamma=0.2, augment="dsa", dsa_strategy=_dsa_strategy(dataset, "color_crop_flip_scale_rotate"),
                    cutmix_p=0.5)


@register_protocol("yoco")
def _yoco(dataset: str) -> Protocol:
    return replace(_idc(dataset), name="yoco")


def _full_data(name: str, batch: int, eta_min: float) -> Callable[[str], Protocol]:
    def make(dataset: str) -> Protocol:
        return Protocol(name, model="resnet18_cifar", epochs=200, batch_size=batch, lr=0.1, nesterov=True,
                        schedule="cosine", eta_min=eta_min,
                        augment="crop_flip" if dataset not in DIGIT_DATASETS else "none", runs=1)
    return make


register_protocol("ccs")(_full_data("ccs", 256, 1e-4))
register_protocol("tdds")(_full_data("tdds", 100, 0.0))
register_protocol("dual")(_full_data("dual", 128, 0.0))


# --- the loop ------------------------------------------------------------------------------------
class TrainHook(TypingProtocol):
    """Called by :class:`Trainer`. ``index`` holds each sample's position in the training set."""

    def on_batch(self, epoch: int, index: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None: ...

    def on_epoch_end(self, epoch: int, trainer: Trainer) -> None: ...


def seeded_model(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model under a fixed seed without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def scheduled_lr(p: Protocol, epoch: int, step: int, steps_total: int, current: float) -> float:
    """The learning rate at a step: cosine per iteration (to ``eta_min``), multistep at fractions of the
    epochs (x ``gamma`` each), else ``current`` (VICO's halving is applied by the loop with a fresh optimiser)."""
    if p.schedule == "cosine":
        return p.eta_min + (p.lr - p.eta_min) * (1 + math.cos(math.pi * step / steps_total)) / 2
    if p.schedule == "multistep":
        drops = sum(epoch >= int(round(m * p.total_epochs)) for m in p.milestones)
        return p.lr * p.gamma**drops
    return current


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class Trainer:
    """Trains one model on an in-memory tensor set under a :class:`Protocol`.

    ``images`` are already in the model's input space (normalized or ZCA) on the training device;
    ``targets`` are hard labels (N,) or soft labels (N, K). Randomness (order, augmentation, CutMix)
    comes from one generator seeded by ``seed``.
    """

    def __init__(self, model: nn.Module, protocol: Protocol, *, seed: int,
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
        self.dsa = DSA(p.dsa_strategy) if p.augment == "dsa" else None
        self.dcaug = DCAugment(p.dc_strategy) if p.augment == "dc" else None

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
        g = self.generator
        if self.dsa is not None:
            return self.dsa(x, g)
        if self.dcaug is not None:
            return self.dcaug(x, g)
        if self.protocol.augment == "crop_flip":
            return crop_flip(x, g)
        return x

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.protocol.loss
        if loss == "ce":
            return F.cross_entropy(logits, target)
        if loss == "soft_ce":
            return soft_cross_entropy(logits, target)
        return F.mse_loss(logits, target)

    def fit(self, images: torch.Tensor, targets: torch.Tensor, *, labels: torch.Tensor | None = None,
            stop_after: int | None = None) -> nn.Module:
        """Train from ``self.epoch`` to the protocol's last epoch (or until ``stop_after`` epochs are done).

        ``labels``: hard labels passed to hooks (default: ``targets`` or their argmax).
        """
        p, g, model = self.protocol, self.generator, self.model
        n = images.shape[0]
        labels = labels if labels is not None else (targets if targets.ndim == 1 else targets.argmax(1))
        steps_per_epoch = math.ceil(n / p.batch_size)
        steps_total = steps_per_epoch * p.total_epochs
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                    if p.precision == "bf16" else nullcontext())
        model.train()
        last = p.total_epochs if stop_after is None else min(stop_after, p.total_epochs)
        while self.epoch < last:
            ep = self.epoch
            order = torch.randperm(n, generator=g, device=g.device).to(images.device)
            for start in range(0, n, p.batch_size):
                idx = order[start:start + p.batch_size]
                x, y = self.augment(images[idx]), targets[idx]
                if p.schedule in ("cosine", "multistep"):
                    self._set_lr(self._lr_at(ep, self.step, steps_total))
                use_mix = p.cutmix_p > 0 and float(torch.rand(1, generator=g, device=g.device)) < p.cutmix_p
                with autocast:
                    if use_mix:
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
                self.progress(self.epoch, p.total_epochs)
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
