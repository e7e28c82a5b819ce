"""Training protocols: what decides an accuracy, and the named presets of each paper.

A :class:`TrainProtocol` is a frozen dataclass of everything that decides an accuracy. Presets:

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from harness.augment import list_augments
from harness.engine.losses import LOSS_WEIGHTINGS, list_loss_weightings, list_losses
from harness.engine.schedules import get_schedule, list_schedules
from harness.errors import ConfigError
from harness.registry import Registry

DIGIT_DATASETS = {"mnist", "mnist5k", "digits", "svhn"}
DC_AUG_DATASETS = {"mnist", "mnist5k"}


@dataclass(frozen=True)
class TrainProtocol:
    name: str
    model: str = "convnet"
    epochs: int = 300
    extra_epoch: bool = False  # VICO runs ``epochs + 1`` epochs
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "vico_half"  # harness.engine.schedules.list_schedules(): vico_half | multistep | cosine | constant
    milestones: tuple[float, ...] = ()  # multistep: fractions of the epochs
    gamma: float = 0.1
    eta_min: float = 0.0
    augment: str = "none"  # harness.augment.list_augments(): none | dsa | idc | dc | crop_flip
    dsa_strategy: str = ""
    dc_strategy: str = ""
    cutmix_p: float = 0.0
    cutmix_beta: float = 1.0
    loss: str = "ce"  # harness.engine.losses.list_losses(): ce (hard labels) | soft_ce | mse (soft labels)
    runs: int = 5
    test_batch: int = 1000
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    reported: str = "last"
    iterations: int | None = None  # set: exactly this many optimiser steps (epochs is then unused)
    loss_weighting: str = "none"  # a registered loss weighting (LOSS_WEIGHTINGS), e.g. tdds_score_mean

    def __post_init__(self) -> None:
        checks = {
            "schedule": (self.schedule, set(list_schedules())),
            "augment": (self.augment, set(list_augments())),
            "loss": (self.loss, set(list_losses())),
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
            if get_schedule(self.schedule).epochs_only:
                per_step = [n for n in list_schedules() if not get_schedule(n).epochs_only]
                raise ConfigError(f"protocol {self.name}: schedule {self.schedule!r} is defined over epochs; use "
                                  f"{', '.join(per_step)} with iterations")
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

    def with_(self, **overrides: Any) -> TrainProtocol:
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


PROTOCOLS: Registry[Callable[[str], TrainProtocol]] = Registry("protocol")


def register_protocol(name: str):
    return PROTOCOLS.register(name)


def list_protocols() -> list[str]:
    return PROTOCOLS.names()


def create_protocol(name: str, dataset: str = "cifar10", **overrides: Any) -> TrainProtocol:
    """The named preset as it applies to ``dataset`` (some presets depend on it), with overrides."""
    proto = PROTOCOLS.get(name)(dataset)
    return proto.with_(**overrides) if overrides else proto


def _dsa_strategy(dataset: str, full: str) -> str:
    return full.replace("_flip", "") if dataset in DIGIT_DATASETS else full


@register_protocol("vico-dc")
def _vico_dc(dataset: str) -> TrainProtocol:
    aug = dataset in DC_AUG_DATASETS
    return TrainProtocol("vico-dc", epochs=1000 if aug else 300, extra_epoch=True,
                    augment="dc" if aug else "none", dc_strategy="crop_scale_rotate" if aug else "")


@register_protocol("vico-dsa")
def _vico_dsa(dataset: str) -> TrainProtocol:
    return TrainProtocol("vico-dsa", epochs=1000, extra_epoch=True, augment="dsa",
                    dsa_strategy=_dsa_strategy(dataset, "color_crop_cutout_flip_scale_rotate"))


@register_protocol("dm")
def _dm(dataset: str) -> TrainProtocol:
    return replace(_vico_dsa(dataset), name="dm")


@register_protocol("idc")
def _idc(dataset: str) -> TrainProtocol:
    return TrainProtocol("idc", epochs=1000, batch_size=64, schedule="multistep", milestones=(2 / 3, 5 / 6),
                    gamma=0.2, augment="idc", dsa_strategy=_dsa_strategy(dataset, "color_crop_flip_scale_rotate"),
                    cutmix_p=0.5)


@register_protocol("yoco")
def _yoco(dataset: str) -> TrainProtocol:
    return replace(_idc(dataset), name="yoco")


def _full_data(name: str, batch: int, eta_min: float) -> Callable[[str], TrainProtocol]:
    def make(dataset: str) -> TrainProtocol:
        return TrainProtocol(name, model="resnet18_cifar", epochs=200, batch_size=batch, lr=0.1, nesterov=True,
                        schedule="cosine", eta_min=eta_min,
                        augment="crop_flip" if dataset not in DIGIT_DATASETS else "none", runs=1)
    return make


register_protocol("ccs")(_full_data("ccs", 256, 1e-4))
register_protocol("tdds")(_full_data("tdds", 100, 0.0))
register_protocol("dual")(_full_data("dual", 128, 0.0))


@register_protocol("ccs-subset")
def _ccs_subset(dataset: str) -> TrainProtocol:
    """CCS pruned-set training (README ``train.py --iterations 40000``; ``CosineAnnealingLR(T_max=iterations,
    eta_min=1e-4)`` stepped per iteration): 40 000 steps of batch 256 at every pruning rate."""
    return replace(_full_data("ccs-subset", 256, 1e-4)(dataset), iterations=40000)


@register_protocol("tdds-subset")
def _tdds_subset(dataset: str) -> TrainProtocol:
    """TDDS ``train_subset.py``: 200 epochs of the subset, batch 128 (README command), cosine to 0 over
    200 x ceil(kept / 128) steps, loss x batch mean of the min-max-normalised TDDS score (``train_subset.py``
    line 181, undocumented in the README; see :func:`tdds_score_mean`)."""
    return replace(_full_data("tdds-subset", 128, 0.0)(dataset), loss_weighting="tdds_score_mean")


@register_protocol("ccs-imagenet")
def _ccs_imagenet(dataset: str) -> TrainProtocol:
    """CCS ``train_imagenet.py`` full-data run (README): ResNet-34, 60 epochs, batch 256, SGD lr 0.1 momentum
    0.9 **without** Nesterov (line 177), wd 1e-4, ``--scheduler cosine`` = ``CosineAnnealingLR(eta_min=1e-4)``
    per iteration; DUAL's ImageNet dynamics run is the same command."""
    return TrainProtocol("ccs-imagenet", model="resnet34", epochs=60, batch_size=256, lr=0.1, momentum=0.9,
                    weight_decay=1e-4, nesterov=False, schedule="cosine", eta_min=1e-4, augment="crop_flip", runs=1)


@register_protocol("ccs-imagenet-subset")
def _ccs_imagenet_subset(dataset: str) -> TrainProtocol:
    """CCS / DUAL ImageNet pruned-set training (README ``--iterations 300000 --batch-size 256 --scheduler
    cosine``): :func:`_ccs_imagenet` for 300 000 steps at every pruning rate."""
    return replace(_ccs_imagenet(dataset), name="ccs-imagenet-subset", iterations=300000)


