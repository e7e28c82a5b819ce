"""Evaluate a set (condensed, a subset of real data, or a whole split) under a named protocol.

``evaluate_set`` trains ``runs`` fresh models, each from its own seed (init, order, augmentation),
and reports the final-epoch accuracy on the real test split: mean, std and every run. The input
space is explicit: pixel-space sets are normalized with the dataset's mean/std; ZCA sets need the
whitening fitted on the real training split, which is applied to the test images too. Sets with
soft labels are trained with a soft-label loss (never rounded to hard labels).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness.augment import ZCA
from harness.data.images import LabeledImages
from harness.engine.protocol import TrainProtocol
from harness.engine.trainer import Trainer, accuracy, seeded_model
from harness.errors import ConfigError
from harness.models import create_model


@dataclass(frozen=True)
class EvalResult:
    accuracies: tuple[float, ...]
    seeds: tuple[int, ...]
    protocol: dict[str, Any]
    model: str
    n_train: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.pstdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean, "std": self.std}

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.std:.2f} % ({len(self.accuracies)} runs, {self.model})"


def model_inputs(train: LabeledImages, test: LabeledImages, zca: ZCA | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test images in the same model input space (normalized, or ZCA-whitened)."""
    if train.channels != test.channels or train.size != test.size:
        raise ConfigError(f"{train.name}: images are {train.channels}x{train.size}, "
                          f"the test split {test.name} is {test.channels}x{test.size}")
    if train.space == "zca":
        if zca is None:
            raise ConfigError(f"{train.name}: ZCA-space set needs the whitening fitted on the real training split")
        return train.images.float(), zca(test.as_space(zca.fit_space).images)  # the space it was fitted in
    mean, std = (train.mean, train.std) if train.mean else (test.mean, test.std)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    sd = torch.tensor(std).view(1, -1, 1, 1)
    test_x = (test.pixel_float() - m) / sd
    return train.normalized(), test_x


def loss_for(train: LabeledImages, protocol: TrainProtocol) -> TrainProtocol:
    """The protocol with the loss the set's labels need: soft labels train with soft CE, never rounded;
    label vectors recorded as regression targets (``extra['soft_label_loss'] == 'mse'``, e.g. KIP's learned
    labels) train with MSE, as KIP's own transfer (kip/nn_training.ipynb, ``loss_type='mse'``) does."""
    target_loss = train.extra.get("soft_label_loss", "soft_ce")
    if train.soft_labels is not None and protocol.loss == "ce":
        return protocol.with_(loss=target_loss)
    if train.soft_labels is not None and protocol.loss == "soft_ce" and target_loss == "mse":
        raise ConfigError(f"{train.name}: the label vectors are regression targets (not probabilities); "
                          "soft CE on them is meaningless: use loss 'mse', or train on their argmax")
    if train.soft_labels is None and protocol.loss != "ce":
        raise ConfigError(f"protocol loss {protocol.loss!r} needs soft labels; the set has hard labels only")
    return protocol


def random_per_class(labels: torch.Tensor, k: int, seed: int, num_classes: int | None = None) -> torch.Tensor:
    """``k`` indices drawn without replacement from each class (sorted), from one seed."""
    g = torch.Generator().manual_seed(seed)
    num_classes = num_classes or int(labels.max()) + 1
    out = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() < k:
            raise ConfigError(f"class {c} has {idx.numel()} samples, fewer than the {k} requested per class")
        out.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
    return torch.cat(out).sort().values


def evaluate_set(
    train: LabeledImages,
    test: LabeledImages,
    protocol: TrainProtocol,
    *,
    runs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    zca: ZCA | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    sample_weights: torch.Tensor | None = None,
) -> EvalResult:
    """``sample_weights``: (N,) per-sample weights aligned with ``train``, for a protocol with a
    ``loss_weighting`` (see :meth:`harness.engine.Trainer.fit`)."""
    runs = protocol.runs if runs is None else runs
    protocol = loss_for(train, protocol)
    x_train, x_test = model_inputs(train, test, zca)
    device = torch.device(device)
    x_train = x_train.to(device)
    targets = (train.soft_labels if protocol.loss != "ce" else train.labels).to(device)
    labels = train.labels.to(device)
    accs, seeds = [], []
    for r in range(runs):
        s = seed + r
        model = seeded_model(lambda: create_model(protocol.model, num_classes=train.num_classes,
                                                  in_chans=train.channels, img_size=train.size), s).to(device)
        cb = (lambda e, t, r=r: progress(r, e, t)) if progress else None
        Trainer(model, protocol, seed=s, progress=cb).fit(x_train, targets, labels=labels,
                                                          sample_weights=sample_weights)
        accs.append(accuracy(model, x_test, test.labels, protocol.test_batch, protocol.precision))
        seeds.append(s)
    return EvalResult(tuple(accs), tuple(seeds), protocol.as_dict(), protocol.model, len(train))
