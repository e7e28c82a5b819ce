"""``evaluate_fast``: :func:`harness.evaluate.evaluate_set` at the speed of the hardware (issue 7).

The path is chosen per device (``path='auto'``):

- CUDA: the K runs train together as a vmapped ensemble (:mod:`harness.engine.ensemble`) when the model has
  no BatchNorm running statistics; optional ``torch.compile`` of the ensemble forward. Training images
  are moved to the device once; the test split is copied from pinned host memory with non-blocking
  copies, batch by batch.
- CPU: sequential runs with :class:`harness.engine.Trainer` (measured on 2 cores: 10 vmapped ConvNets
  ran at 0.45x the speed of sequential, grouped convolutions at 0.65x, so ensembling is not a CPU
  lever). Profiling the Trainer on CPU showed no avoidable overhead worth a second loop: the forward
  and backward are >= 95% of a ConvNet-3 step, the SGD step ~3% (fused SGD was not faster), DSA ~2%,
  and Python bookkeeping well under 1%. The CPU levers are ``precision='bf16'`` (autocast, ~1.7x on a
  CPU with native bf16) and ``compile=True`` (``torch.compile`` of the model: fused GroupNorm/ReLU/pool,
  ~1.6x in fp32 and ~1.8x on top of bf16 per ConvNet-3 step once compiled, after a one-off compile of
  ~15-30 s, so it pays off for full-length evaluations, not for a few epochs). Both are opt-in.
- BatchNorm models always run sequentially.

Precision: ``None`` keeps the protocol's (``fp32`` in every preset, for faithful reproduction);
``'bf16'`` is an explicit choice, recorded in the returned protocol dict and in ``extra``. On a CPU
without native bf16 support a bf16 request falls back to fp32 (recorded in ``extra``).

The sequential path reproduces ``evaluate_set`` exactly (same seeds, same generator streams; with
``compile=True`` up to the float rounding of fused kernels); the
ensemble path reproduces the model inits and data orders exactly and draws augmentation from its own
stream, so it agrees with the sequential path in distribution (see :mod:`harness.engine.ensemble`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.augment import ZCA
from harness.data.images import LabeledImages
from harness.engine.ensemble import can_ensemble, ensemble_accuracy, fit_ensemble
from harness.engine.protocol import TrainProtocol
from harness.engine.trainer import Trainer, accuracy, seeded_model
from harness.errors import ConfigError
from harness.evaluate import EvalResult, loss_for, model_inputs
from harness.models import create_model

PATHS = ("auto", "ensemble", "sequential")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively on ``device`` (CUDA with bf16, or a CPU with AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())  # noqa: SLF001
        except (AttributeError, RuntimeError):
            return False
    return False


def choose_path(device: torch.device, model: torch.nn.Module, runs: int, path: str = "auto") -> str:
    """``'ensemble'`` or ``'sequential'`` for ``path`` on ``device`` (BatchNorm models always sequential)."""
    if path not in PATHS:
        raise ConfigError(f"evaluate_fast: path={path!r}, expected one of {list(PATHS)}")
    if not can_ensemble(model):
        return "sequential"
    if path == "auto":
        return "ensemble" if device.type == "cuda" and runs > 1 else "sequential"
    return path


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def evaluate_fast(
    train: LabeledImages,
    test: LabeledImages,
    protocol: TrainProtocol,
    *,
    runs: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    path: str = "auto",
    precision: str | None = None,
    compile: bool = False,
    zca: ZCA | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> EvalResult:
    """Train ``runs`` fresh models on ``train`` and report final-epoch accuracy on ``test``.

    Same contract and seeds as :func:`harness.evaluate.evaluate_set`; ``path``, ``precision`` and
    ``compile`` only change how fast it runs (see the module docstring for what is exact).
    """
    runs = protocol.runs if runs is None else runs
    if precision not in (None, "fp32", "bf16"):
        raise ConfigError(f"evaluate_fast: precision={precision!r}, expected None, 'fp32' or 'bf16'")
    protocol = loss_for(train, protocol)
    device = torch.device(device)
    extra: dict[str, object] = {}
    precision = precision or protocol.precision
    if precision == "bf16" and not bf16_supported(device):
        extra["precision_fallback"] = f"bf16 requested but not native on {device}; ran fp32"
        precision = "fp32"
    if precision != protocol.precision:
        protocol = protocol.with_(precision=precision)
    x_train, x_test = model_inputs(train, test, zca)
    x_train = _to_device(x_train, device)
    targets = _to_device(train.soft_labels if protocol.loss != "ce" else train.labels, device)
    labels = _to_device(train.labels, device)
    if device.type == "cuda":
        x_test = x_test.pin_memory()

    def build(s: int) -> torch.nn.Module:
        return seeded_model(lambda: create_model(protocol.model, num_classes=train.num_classes,
                                                 in_chans=train.channels, img_size=train.size), s).to(device)

    seeds = [seed + r for r in range(runs)]
    first = build(seeds[0])
    chosen = choose_path(device, first, runs, path)
    extra.update(path=chosen, device=str(device), compile=bool(compile))
    if chosen == "ensemble":
        models = [first] + [build(s) for s in seeds[1:]]
        cb = (lambda e, t: progress(-1, e, t)) if progress else None
        fit_ensemble(models, protocol, seeds, x_train, targets, precision=precision, compile=compile, progress=cb)
        accs = ensemble_accuracy(models, x_test, test.labels, batch=protocol.test_batch, precision=precision)
    else:
        accs = []
        for r, s in enumerate(seeds):
            model = first if r == 0 else build(s)
            cb = (lambda e, t, r=r: progress(r, e, t)) if progress else None
            net = torch.compile(model) if compile else model  # shares the parameters; dynamo reuses its graph
            Trainer(net, protocol, seed=s, progress=cb).fit(x_train, targets, labels=labels)
            # the compiled model also runs the test pass (an inference graph: ~2x over eager bf16 on CPU)
            accs.append(accuracy(net, x_test, test.labels, protocol.test_batch, precision))
    return EvalResult(tuple(accs), tuple(seeds), protocol.as_dict(), protocol.model, len(train), extra)
