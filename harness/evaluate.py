"""Evaluate a set (condensed, a subset of real data, or a whole split) under a named protocol.

:func:`evaluate` is the one evaluation entry point: it trains one fresh model per seed (init, order,
augmentation all from that seed) and reports the final-epoch accuracy on the real test split: mean,
std and every run, aligned with the seeds. The input space is explicit (:func:`model_input`):
pixel-space sets are normalized with the dataset's mean/std; ZCA sets need the whitening fitted on the
real training split, which is applied to the test images too. Sets with soft labels are trained with
the loss their labels need (:func:`loss_for`; never rounded to hard labels).

How the runs execute is :class:`harness.engine.EngineOptions` (never what they compute). The default
is the fastest way to the same accuracy, resolved per call and device (:mod:`harness.engine.options`):

- ``path="sequential"``: one :class:`harness.engine.Trainer` per seed; ``"ensemble"``: the K seeds as
  one vmapped program (:mod:`harness.engine.ensemble`; on the CPU too when asked for explicitly);
  ``"auto"``: the ensemble on CUDA for K > 1 when the model allows it (no BatchNorm running statistics),
  else sequential (10 vmapped ConvNets ran at 0.45x the speed of sequential runs on a 2-core CPU, issue 7).
  On CUDA the training images move to the device once and the test split is copied from pinned host
  memory batch by batch.
- ``precision``: ``"auto"`` autocasts to bf16 where the device has native bf16 (~1.7x per ConvNet-3 step
  on a CPU with AVX512-BF16, same accuracy), else the protocol's; ``None`` keeps the protocol's (fp32 in
  every preset); ``"fp32"`` / ``"bf16"`` as given (bf16 without native support runs fp32 and
  ``extra["precision_fallback"]`` says so).
- ``compile``: ``"auto"`` compiles the model (training and the test pass) when the K runs' expected eager
  training time passes the measured break-even (:class:`harness.engine.options.CompileRule`; CPU only);
  ``True`` / ``False`` force it.

``EvalResult.extra`` records what ran as resolved values: ``path``, ``precision`` (+ ``precision_reason``),
``compile`` (True / False, + ``compile_reason`` and, for ``auto``, ``expected_eager_s``).

What is exact: :meth:`EngineOptions.exact` (fp32, eager, sequential; CLI ``--exact``) reproduces the
protocol's fp32 numbers bit for bit (the pre-issue-14 default). Compiled runs agree up to the float rounding
of fused kernels, bf16 runs in accuracy (not bit for bit). The ensemble path reproduces the model inits and
data orders exactly and draws augmentation from its own stream, so it agrees with the sequential path in
distribution (bit for bit up to float reassociation without augmentation).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from harness.augment import ZCA
from harness.data.images import LabeledImages
from harness.engine.ensemble import ensemble_accuracy, fit_ensemble
from harness.engine.losses import get_loss
from harness.engine.options import (
    DEFAULT,
    EngineOptions,
    choose_compile,
    choose_path,
    resolve_precision,
    samples_trained,
    training_flops,
)
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
    return model_input(train), test_x


def model_input(li: LabeledImages) -> torch.Tensor:
    """A set's images in the model's input space: ZCA-space images as stored, else mean/std-normalized pixels."""
    return li.images.float() if li.space == "zca" else li.normalized()


def targets_for(li: LabeledImages, protocol: TrainProtocol) -> torch.Tensor:
    """The training targets ``protocol.loss`` needs (after :func:`loss_for`): class indices for a hard-label
    loss, the set's label vectors for a soft one."""
    if get_loss(protocol.loss).targets == "hard":
        return li.labels
    if li.soft_labels is None:
        raise ConfigError(f"{li.name}: protocol loss {protocol.loss!r} needs soft labels; the set has hard labels only")
    return li.soft_labels


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


def run_seeds(protocol: TrainProtocol, seeds: Sequence[int] | None = None, runs: int | None = None,
              seed: int = 0) -> tuple[int, ...]:
    """The seeds of an evaluation: ``seeds`` when given, else ``seed .. seed + runs - 1`` (``runs`` defaulting
    to ``protocol.runs``). Refuses an empty list, repeated seeds and a ``runs`` that contradicts ``seeds``."""
    if seeds is None:
        runs = protocol.runs if runs is None else runs
        if runs < 1:
            raise ConfigError(f"runs={runs}: expected at least one run")
        return tuple(seed + r for r in range(runs))
    out = tuple(int(s) for s in seeds)
    if not out:
        raise ConfigError("seeds: expected at least one seed")
    if len(set(out)) != len(out):
        raise ConfigError(f"seeds {list(out)}: each run needs its own seed (repeats give identical runs)")
    if runs is not None and runs != len(out):
        raise ConfigError(f"runs={runs} but {len(out)} seeds given; give one of them")
    return out


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def evaluate(
    train: LabeledImages,
    test: LabeledImages,
    protocol: TrainProtocol,
    *,
    seeds: Sequence[int] | None = None,
    runs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    zca: ZCA | None = None,
    sample_weights: torch.Tensor | None = None,
    options: EngineOptions | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> EvalResult:
    """Train one fresh model per seed on ``train`` under ``protocol``; report final-epoch accuracy on ``test``.

    ``seeds``: the runs' seeds (default ``seed .. seed + runs - 1``, ``runs`` defaulting to ``protocol.runs``);
    ``EvalResult.accuracies[i]`` is the run of ``EvalResult.seeds[i]``. ``zca``: the whitening of a ZCA-space
    set (fitted on the real training split). ``sample_weights``: (N,) per-sample weights aligned with
    ``train``, for a protocol with a ``loss_weighting`` (see :meth:`harness.engine.Trainer.fit`).
    ``options``: how the runs execute (module docstring; default: the fast path, ``EngineOptions.exact()`` for
    the bit-exact fp32 one); ``EvalResult.extra`` records the path, precision and compile that ran, resolved.
    ``progress(run, epoch, epochs)``: run -1 for the ensemble.
    """
    options = options or DEFAULT
    seeds = run_seeds(protocol, seeds, runs, seed)
    device = torch.device(device)
    protocol, extra = resolve_precision(loss_for(train, protocol), options, device)
    x_train, x_test = model_inputs(train, test, zca)
    x_train = _to_device(x_train, device)
    targets = _to_device(targets_for(train, protocol), device)
    labels = _to_device(train.labels, device)
    if device.type == "cuda":
        x_test = x_test.pin_memory()

    def build(s: int) -> torch.nn.Module:
        return seeded_model(lambda: create_model(protocol.model, num_classes=train.num_classes,
                                                 in_chans=train.channels, img_size=train.size), s).to(device)

    first = build(seeds[0])
    chosen = choose_path(device, first, len(seeds), options.path)
    if chosen != options.path and options.path != "auto":
        extra["path_fallback"] = f"{protocol.model} has BatchNorm running statistics; ran sequentially"
    flops = None
    if options.compile == "auto":
        flops = training_flops(protocol.model, num_classes=train.num_classes, in_chans=train.channels,
                               img_size=train.size, samples=len(seeds) * samples_trained(protocol, len(train)))
    compile_, notes = choose_compile(options, device, precision=protocol.precision, train_flops=flops)
    extra.update(path=chosen, precision=protocol.precision, compile=compile_, **notes, device=str(device))
    if chosen == "ensemble":
        models = [first] + [build(s) for s in seeds[1:]]
        cb = (lambda e, t: progress(-1, e, t)) if progress else None
        fit_ensemble(models, protocol, seeds, x_train, targets, compile=compile_, progress=cb,
                     sample_weights=sample_weights)
        accs = ensemble_accuracy(models, x_test, test.labels, batch=protocol.test_batch,
                                 precision=protocol.precision)
    else:
        accs = []
        for r, s in enumerate(seeds):
            model = first if r == 0 else build(s)
            cb = (lambda e, t, r=r: progress(r, e, t)) if progress else None
            trainer = Trainer(model, protocol, seed=s, progress=cb, compile=compile_)
            trainer.fit(x_train, targets, labels=labels, sample_weights=sample_weights)
            # a compiled model also runs the test pass (an inference graph: ~2x over eager bf16 on CPU)
            accs.append(accuracy(trainer.net, x_test, test.labels, protocol.test_batch, protocol.precision))
    return EvalResult(tuple(accs), tuple(seeds), protocol.as_dict(), protocol.model, len(train), extra)


__all__ = ["EvalResult", "evaluate", "loss_for", "model_input", "model_inputs", "random_per_class", "run_seeds",
           "targets_for"]
