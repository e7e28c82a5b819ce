"""One training loop and the named evaluation/training protocols.

A :class:`Protocol` is a frozen dataclass of everything that decides an accuracy. Presets:

- ``vico-dc``: VICO ``evaluate_synset`` for DC: SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256,
  ``epochs + 1`` epochs with lr x0.1 after epoch ``epochs // 2 + 1`` and a fresh optimiser;
  MNIST gets DC's ``crop_scale_rotate`` augmentation and 1000 epochs, other datasets none and 300.
- ``vico-dsa`` / ``dm``: the same optimiser, 1000 epochs, per-sample DSA
  (``color_crop_cutout_flip_scale_rotate``; no flip on digits).
- ``idc`` / ``yoco``: 1000 epochs, batch 64, SGD 0.01/0.9/5e-4, lr x0.2 at 2/3 and 5/6 of training,
  IDC's ``DiffAug(color_crop_flip_scale_rotate, batch=False)`` (``augment="idc"``: flip and colour on
  every batch, then one of crop / scale / rotate per batch; cutout dropped for CutMix p 0.5, Beta(1, 1)).
  ``--param augment=dsa`` switches to VICO's DSA mode ``S`` (one op group per call) with the same strategy.
- ``ccs`` / ``tdds`` / ``dual``: full-data ResNet-18 training, 200 epochs, SGD 0.1 nesterov,
  wd 5e-4, cosine per iteration, random crop (pad 4, reflect) + flip; batch 256 / 100 / 128.
- pruned-subset training as each paper ran it (``shared/reference/pruning-scores.md`` §4):
  ``ccs-subset`` (CCS ``train.py --iterations 40000``, batch 256, cosine over the 40 000 steps to
  1e-4, at every pruning rate), ``tdds-subset`` (TDDS ``train_subset.py``: 200 epochs of the subset,
  batch 128, loss x batch mean of the min-max-normalised TDDS score), ``dual`` (DUAL CIFAR
  ``train_subset.py``: 200 epochs, batch 128; 64 / 32 at 80 / 90 % pruning are set per cell by the
  table spec); ImageNet: ``ccs-imagenet`` (dynamics: ResNet-34, 60 epochs, batch 256, SGD 0.1
  momentum 0.9 without Nesterov, wd 1e-4, cosine to 1e-4; ``train_imagenet.py``) and
  ``ccs-imagenet-subset`` (the same, 300 000 iterations; CCS and DUAL ImageNet README commands).

Length: ``epochs`` passes over the set, or, when ``iterations`` is set, exactly that many optimiser
steps through as many (re-shuffled) passes as it takes, the last one cut short, with the schedule
laid over those steps. CCS's own loop runs whole epochs until the budget is spent (``train.py``:
``while num_of_iterations > 0`` with ``remaining_iterations=-1``), i.e. up to one epoch minus a step
more than ``--iterations`` with the cosine past its ``T_max``; we stop at the budget.

Every protocol reports the final epoch's test accuracy; nothing is selected on the test split.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from typing import Any
from typing import Protocol as TypingProtocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.augment import create_augment, cutmix, list_augments
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
    augment: str = "none"  # harness.augment.list_augments(): none | dsa | idc | dc | crop_flip
    dsa_strategy: str = ""
    dc_strategy: str = ""
    cutmix_p: float = 0.0
    cutmix_beta: float = 1.0
    loss: str = "ce"  # ce (hard labels) | soft_ce | mse (soft labels)
    runs: int = 5
    test_batch: int = 1000
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    reported: str = "last"
    iterations: int | None = None  # set: exactly this many optimiser steps (epochs is then unused)
    loss_weighting: str = "none"  # a registered loss weighting (LOSS_WEIGHTINGS), e.g. tdds_score_mean

    def __post_init__(self) -> None:
        checks = {
            "schedule": (self.schedule, {"vico_half", "multistep", "cosine", "constant"}),
            "augment": (self.augment, set(list_augments())),
            "loss": (self.loss, {"ce", "soft_ce", "mse"}),
            "precision": (self.precision, {"fp32", "bf16"}),
            "reported": (self.reported, {"last"}),
        }
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(f"protocol {self.name}: {key}={value!r}, expected one of {sorted(allowed)}")
        if self.epochs < 1 or self.batch_size < 1 or self.runs < 1:
            raise ConfigError(f"protocol {self.name}: epochs, batch_size and runs must be >= 1")
        if self.augment in ("dsa", "idc") and not self.dsa_strategy:
            raise ConfigError(f"protocol {self.name}: augment={self.augment!r} needs a dsa_strategy")
        if self.iterations is not None:
            if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
                raise ConfigError(f"protocol {self.name}: iterations={self.iterations!r}, expected None or an "
                                  "integer >= 1")
            if self.schedule == "vico_half":
                raise ConfigError(f"protocol {self.name}: schedule 'vico_half' is defined over epochs; use "
                                  "cosine, multistep or constant with iterations")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ConfigError(f"protocol {self.name}: loss_weighting={self.loss_weighting!r}, expected one of "
                              f"{list_loss_weightings()}")
        if self.loss_weighting != "none" and self.loss == "mse":
            raise ConfigError(f"protocol {self.name}: loss_weighting {self.loss_weighting!r} needs a "
                              "cross-entropy loss (ce or soft_ce)")

    @property
    def total_epochs(self) -> int:
        """Passes over the set of an epoch-defined protocol (VICO's ``epochs + 1`` included)."""
        if self.iterations is not None:
            raise ConfigError(f"protocol {self.name}: trains {self.iterations} iterations, so its number of epochs "
                              "depends on the set size; use epochs_for(n)")
        return self.epochs + (1 if self.extra_epoch else 0)

    def steps_per_epoch(self, n: int) -> int:
        """Optimiser steps in one pass over ``n`` samples (the last batch may be short)."""
        return math.ceil(n / self.batch_size)

    def steps_for(self, n: int) -> int:
        """Optimiser steps of a whole run on ``n`` samples: ``iterations``, else steps/epoch x epochs."""
        return self.iterations if self.iterations is not None else self.steps_per_epoch(n) * self.total_epochs

    def epochs_for(self, n: int) -> int:
        """Passes over ``n`` samples a whole run starts (the last one is cut short under ``iterations``)."""
        if self.iterations is None:
            return self.total_epochs
        return math.ceil(self.iterations / self.steps_per_epoch(n))

    @property
    def length(self) -> str:
        if self.iterations is not None:
            return f"{self.iterations} iterations"
        return f"{self.total_epochs} epochs"

    def with_(self, **overrides: Any) -> Protocol:
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(f"protocol {self.name}: unknown keys {bad} (known: {sorted(known)})")
        return replace(self, **overrides)

    def describe(self) -> str:
        parts = [f"{self.name}: {self.model}, {self.length}, batch {self.batch_size}",
                 f"SGD lr {self.lr} m {self.momentum} wd {self.weight_decay}{' nesterov' if self.nesterov else ''}",
                 f"schedule {self.schedule}"
                 + (f" at {[round(m, 3) for m in self.milestones]} x{self.gamma}" if self.milestones else "")
                 + (f" to {self.eta_min}" if self.schedule == "cosine" and self.eta_min else ""),
                 f"aug {self.augment}" + (f" ({self.dsa_strategy or self.dc_strategy})"
                                          if self.augment in ("dsa", "idc", "dc") else ""),
                 *([f"cutmix p {self.cutmix_p}"] if self.cutmix_p else []),
                 f"loss {self.loss}",
                 *([f"loss weighting {self.loss_weighting}"] if self.loss_weighting != "none" else []),
                 f"{self.precision}", "last-step test accuracy" if self.iterations else "final-epoch test accuracy"]
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """All fields; ``iterations`` / ``loss_weighting`` only when set, so the cache keys (hashes of this
        dict) of every protocol that does not use them are what they were before these fields existed."""
        d = asdict(self)
        for key, default in _LATE_DEFAULTS.items():
            if d[key] == default:
                del d[key]
        return d


_LATE_DEFAULTS: dict[str, Any] = {"iterations": None, "loss_weighting": "none"}


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
                    gamma=0.2, augment="idc", dsa_strategy=_dsa_strategy(dataset, "color_crop_flip_scale_rotate"),
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


@register_protocol("ccs-subset")
def _ccs_subset(dataset: str) -> Protocol:
    """CCS pruned-set training (README ``train.py --iterations 40000``; ``CosineAnnealingLR(T_max=iterations,
    eta_min=1e-4)`` stepped per iteration): 40 000 steps of batch 256 at every pruning rate."""
    return replace(_full_data("ccs-subset", 256, 1e-4)(dataset), iterations=40000)


@register_protocol("tdds-subset")
def _tdds_subset(dataset: str) -> Protocol:
    """TDDS ``train_subset.py``: 200 epochs of the subset, batch 128 (README command), cosine to 0 over
    200 x ceil(kept / 128) steps, loss x batch mean of the min-max-normalised TDDS score (``train_subset.py``
    line 181, undocumented in the README; see :func:`tdds_score_mean`)."""
    return replace(_full_data("tdds-subset", 128, 0.0)(dataset), loss_weighting="tdds_score_mean")


@register_protocol("ccs-imagenet")
def _ccs_imagenet(dataset: str) -> Protocol:
    """CCS ``train_imagenet.py`` full-data run (README): ResNet-34, 60 epochs, batch 256, SGD lr 0.1 momentum
    0.9 **without** Nesterov (line 177), wd 1e-4, ``--scheduler cosine`` = ``CosineAnnealingLR(eta_min=1e-4)``
    per iteration; DUAL's ImageNet dynamics run is the same command."""
    return Protocol("ccs-imagenet", model="resnet34", epochs=60, batch_size=256, lr=0.1, momentum=0.9,
                    weight_decay=1e-4, nesterov=False, schedule="cosine", eta_min=1e-4, augment="crop_flip", runs=1)


@register_protocol("ccs-imagenet-subset")
def _ccs_imagenet_subset(dataset: str) -> Protocol:
    """CCS / DUAL ImageNet pruned-set training (README ``--iterations 300000 --batch-size 256 --scheduler
    cosine``): :func:`_ccs_imagenet` for 300 000 steps at every pruning rate."""
    return replace(_ccs_imagenet(dataset), name="ccs-imagenet-subset", iterations=300000)


# --- per-sample loss weightings ------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeighting:
    """How a protocol weights the training loss by per-sample weights.

    ``weights(scores)``: an index-aligned score array over the **whole** training set -> index-aligned
    weights (the flow then takes the kept samples' rows and hands them to :meth:`Trainer.fit`).
    ``apply(losses, w)``: per-sample losses ``(..., B)`` and the batch's weights ``(..., B)`` -> the loss
    ``(...)`` to minimise (a leading model axis is allowed, for :mod:`harness.ensemble`).
    """

    name: str
    weights: Callable[[np.ndarray], np.ndarray] | None
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    doc: str = ""


LOSS_WEIGHTINGS: Registry[LossWeighting] = Registry("loss weighting")


def register_loss_weighting(w: LossWeighting) -> LossWeighting:
    return LOSS_WEIGHTINGS.register(w.name, w)


def list_loss_weightings() -> list[str]:
    return LOSS_WEIGHTINGS.names()


def get_loss_weighting(name: str) -> LossWeighting:
    return LOSS_WEIGHTINGS.get(name)


def minmax_weights(scores: np.ndarray) -> np.ndarray:
    """``(s - min s) / (max s - min s)`` over every sample of ``scores`` (float64, index-aligned)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.isfinite(s).all():
        raise ConfigError(f"loss weights need a finite 1-D score array, got shape {s.shape}")
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        raise ConfigError("loss weights: every score is equal, so min-max normalisation is undefined")
    return (s - lo) / (hi - lo)


def tdds_score_mean(losses: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """TDDS subset training: ``loss = mean_B(CE) * mean_B(s)`` (``train_subset.py`` line 181:
    ``criterion(output, target) * sum(s) / n``), where ``s`` is the sample's TDDS score min-max normalised
    over the whole training set (``data_subset.py`` line 26 on the saved sorted scores, then gathered back
    to each sample's index at line 36). The batch is scaled as a whole, not sample by sample: the gradient
    is the plain mean-CE gradient times the batch's mean normalised score. Undocumented in the README."""
    return losses.mean(-1) * w.to(losses.dtype).mean(-1)


register_loss_weighting(LossWeighting("none", None, lambda losses, w: losses.mean(-1), "unweighted mean loss"))
register_loss_weighting(LossWeighting("tdds_score_mean", minmax_weights, tdds_score_mean,
                                      "TDDS: mean CE x batch mean of the min-max-normalised TDDS score"))


# --- the loop ------------------------------------------------------------------------------------
def check_sample_weights(p: Protocol, sample_weights: torch.Tensor | None, n: int) -> LossWeighting | None:
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


def scheduled_lr(p: Protocol, epoch: int, step: int, steps_total: int, current: float) -> float:
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
