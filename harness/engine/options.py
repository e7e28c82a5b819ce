"""How a training run executes (never what it computes): :class:`EngineOptions`.

A :class:`harness.engine.TrainProtocol` decides an accuracy; :class:`EngineOptions` decides how the
hardware gets there. The default is the fastest way that gives the same accuracy, resolved per run and
device; :meth:`EngineOptions.exact` is the bit-exact reference (fp32, eager, sequential).

- ``path``: ``sequential`` (one :class:`harness.engine.Trainer` per seed), ``ensemble`` (the K seeds
  trained together as one vmapped program, :mod:`harness.engine.ensemble`; on the CPU too when asked
  for explicitly) or ``auto`` (ensemble on CUDA for K > 1 when the model allows it, else sequential:
  10 vmapped ConvNets ran at 0.45x the speed of sequential runs on a 2-core CPU, issue 7).
  BatchNorm models always run sequentially (:func:`choose_path`).
- ``precision``: ``"auto"`` (default) runs bf16 autocast where the device has native bf16 (a CPU with
  AVX512-BF16/AMX, CUDA with bf16: :func:`bf16_supported`), else the protocol's; ``None`` keeps the
  protocol's (``fp32`` in every preset); ``"fp32"`` / ``"bf16"`` override it. bf16 asked for on a device
  without native bf16 runs fp32 and says so (:func:`resolve_precision`).
- ``compile``: ``"auto"`` (default) ``torch.compile`` s the model when the run is long enough to pay for the
  one-off compile (:data:`COMPILE_RULE`, measured on the CPU; never on other devices, where it is not
  measured); ``True`` / ``False`` force it. Fused kernels: the same numbers up to float rounding.

What ran is always recorded as resolved values (``EvalResult.extra``: ``path``, ``precision``,
``precision_reason``, ``compile``, ``compile_reason``), never ``"auto"``.

:meth:`EngineOptions.exact` (CLI ``--exact``) reproduces the protocol's fp32 numbers bit for bit: they
are the numbers every command computed by default before issue 14.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.engine.host_memory import keep_freed_memory
from harness.engine.protocol import TrainProtocol
from harness.errors import ConfigError
from harness.models import create_model, has_running_stats

PATHS = ("auto", "ensemble", "sequential")
PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)
COMPILE_CHOICES = ("auto", True, False)


@dataclass(frozen=True)
class EngineOptions:
    """How runs execute: ``path`` (auto | sequential | ensemble), ``precision`` (auto | fp32 | bf16, or None
    = the protocol's) and ``compile`` (auto | True | False). The default is the fast one (module doc);
    :meth:`exact` the bit-exact fp32 reference."""

    path: str = "auto"
    precision: str | None = "auto"
    compile: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ConfigError(f"engine option path={self.path!r}, expected one of {list(PATHS)}")
        if self.precision is not None and self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"engine option precision={self.precision!r}, expected None or one of "
                              f"{list(PRECISION_CHOICES)}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ConfigError(f"engine option compile={self.compile!r}, expected 'auto', true or false")

    @classmethod
    def exact(cls) -> EngineOptions:
        """fp32, eager, sequential: the protocol's fp32 numbers bit for bit (the pre-issue-14 default)."""
        return cls(path="sequential", precision="fp32", compile=False)

    @property
    def is_exact(self) -> bool:
        return self == EngineOptions.exact()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = EngineOptions()


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


def resolve_precision(protocol: TrainProtocol, options: EngineOptions | None, device: str | torch.device
                      ) -> tuple[TrainProtocol, dict[str, Any]]:
    """The protocol with the precision that will run on ``device``, and notes for the record.

    ``options.precision``: ``"auto"`` is bf16 where :func:`bf16_supported`, else the protocol's; ``None`` the
    protocol's; ``"fp32"`` / ``"bf16"`` as given. bf16 on a device without native bf16 runs fp32
    (``notes["precision_fallback"]`` says so). ``notes["precision_reason"]`` says why the precision is what
    it is. The returned protocol is the one to record: its ``precision`` is what ran. On the CPU it also applies
    :func:`harness.engine.host_memory.keep_freed_memory` (numbers unchanged) and records it (``host_malloc``).
    """
    options = options or DEFAULT
    device = torch.device(device)
    notes: dict[str, Any] = {}
    native = bf16_supported(device)
    if options.precision == "auto":
        precision = "bf16" if native else protocol.precision
        notes["precision_reason"] = (f"auto: native bf16 on {device.type}" if native
                                     else f"auto: no native bf16 on {device.type}; the protocol's")
    elif options.precision is None:
        precision = protocol.precision
        notes["precision_reason"] = "the protocol's"
    else:
        precision = options.precision
        notes["precision_reason"] = "requested"
    if precision == "bf16" and not native:
        notes["precision_fallback"] = f"bf16 requested but not native on {device}; ran fp32"
        precision = "fp32"
    if precision != protocol.precision:
        protocol = protocol.with_(precision=precision)
    notes.update(keep_freed_memory(device))  # CPU: no page faults per step (harness.engine.host_memory)
    return protocol, notes


def can_ensemble(model: nn.Module) -> bool:
    """True if ``model`` can be trained as a vmapped ensemble member (no BatchNorm running statistics)."""
    return not has_running_stats(model)


def choose_path(device: str | torch.device, model: nn.Module, runs: int, path: str = "auto") -> str:
    """``'ensemble'`` or ``'sequential'`` for ``path`` on ``device`` (BatchNorm models always sequential)."""
    if path not in PATHS:
        raise ConfigError(f"engine option path={path!r}, expected one of {list(PATHS)}")
    if not can_ensemble(model):
        return "sequential"
    if path == "auto":
        return "ensemble" if torch.device(device).type == "cuda" and runs > 1 else "sequential"
    return path


# --- compile: a measured break-even --------------------------------------------------------------------
@dataclass(frozen=True)
class CompileRule:
    """When ``compile="auto"`` compiles: the expected eager training time of the call (optimiser steps x
    per-step time) times the share a compiled step saves must exceed the one-off compile cost.

    Per-step time is estimated without a clock (the decision, and hence the float rounding, must not depend
    on the machine's load): ``3 x forward FLOPs per sample x samples per step / rate[precision]``, summed over
    every step of every run of the call (the compiled graph is reused across the runs' models). Forward
    FLOPs come from ``torch.utils.flop_counter`` on the model built on the meta device (convolutions and
    matmuls; :func:`forward_flops`); training's x3 is forward + backward.

    Measured for issue 14 on the 2-core AMD EPYC VM with avx512_bf16 (this project's CPU and CI's; torch
    2.14, 2 threads), ConvNet-3 w128 instancenorm on CIFAR geometry (101.5 MFLOP forward per sample),
    ``Trainer.fit`` on 100 images, eager and compiled interleaved in one process:

    - eager, quiet machine: ``vico-dc`` bf16 0.19 s per 100-image step (160 GFLOP/s), ``yoco`` bf16 0.096 s
      per step (batch 64 / 36, IDC augmentation and CutMix; 158 GFLOP/s), ``vico-dc`` fp32 0.33 s (91 GFLOP/s)
      -> ``rate``. Under load from other jobs the same steps ran up to 4x slower (37 GFLOP/s).
    - compiled, steady state: 1.73x (bf16, both protocols), 1.57x (fp32); 1.5-2.2x for single steps at
      batch 64 and 256 -> ``saved = 0.4`` (a 1.67x step).
    - compile cost, cold (empty inductor cache): the training graph 22-26 s (bf16) / 14-18 s (fp32), a second
      batch shape (the short last batch: dynamic-shape recompile) up to 21 s, the test pass's eval graph up
      to 10 s (issue 7: 39 s for a whole cold evaluation) -> ``cold_s = 60``. Warm (inductor's on-disk cache,
      a later process): 1.5-12 s; a second model in the same process: ~0 s. The rule takes the cold cost:
      the decision must not depend on a cache's state.

    Break-even: ``cold_s / saved`` = 150 s of eager training in one call. A 301-epoch ``vico-dc`` evaluation
    of a CIFAR-10 IPC-10 set (5 runs: ~290 s eager bf16) and a 1000-epoch YOCO dynamics run on it (~190 s)
    compile; one such evaluation run (~57 s), the 100 epochs LBPE reads (~19 s) and the tests' 8x8 digits
    runs (well under a second) do not.
    """

    cold_s: float = 60.0
    saved: float = 0.4
    rate_bf16: float = 160e9  # FLOP/s of eager training
    rate_fp32: float = 90e9

    @property
    def break_even_s(self) -> float:
        return self.cold_s / self.saved

    def expected_seconds(self, train_flops: float, precision: str) -> float:
        return float(train_flops) / (self.rate_bf16 if precision == "bf16" else self.rate_fp32)

    def pays(self, train_flops: float, precision: str) -> bool:
        return self.expected_seconds(train_flops, precision) >= self.break_even_s


COMPILE_RULE = CompileRule()


@functools.lru_cache(maxsize=64)
def _flops(model: str, num_classes: int, in_chans: int, img_size: tuple[int, int], kwargs_json: str) -> int | None:
    size = img_size[0] if img_size[0] == img_size[1] else img_size
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            net = create_model(model, num_classes=num_classes, in_chans=in_chans, img_size=size,
                               **json.loads(kwargs_json))
            x = torch.empty(1, in_chans, *img_size)
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                net(x)
        return int(fc.get_total_flops())
    except Exception:  # noqa: BLE001  a model the meta device or the counter cannot run: cost unknown
        return None


def forward_flops(model: str, *, num_classes: int, in_chans: int, img_size: int | tuple[int, int],
                  model_kwargs: Mapping[str, Any] | None = None) -> int | None:
    """Forward FLOPs of one sample (convolutions and matmuls), counted on the meta device; None if unknown."""
    hw = (int(img_size), int(img_size)) if isinstance(img_size, int) else tuple(int(v) for v in img_size)
    return _flops(model, int(num_classes), int(in_chans), hw,
                  json.dumps(dict(model_kwargs or {}), sort_keys=True, default=str))


def choose_compile(options: EngineOptions | None, device: str | torch.device, *, precision: str,
                   train_flops: float | None) -> tuple[bool, dict[str, Any]]:
    """Whether to ``torch.compile`` and notes for the record (``compile_reason``, ``expected_eager_s``).

    ``train_flops``: the expected FLOPs of all training in the call (:func:`training_flops`; None: unknown,
    then ``auto`` stays eager). ``auto`` follows :data:`COMPILE_RULE` on the CPU and stays eager elsewhere.
    """
    options = options or DEFAULT
    if options.compile is True:
        return True, {"compile_reason": "requested"}
    if options.compile is False:
        return False, {"compile_reason": "exact" if options.is_exact else "not requested"}
    device = torch.device(device)
    if device.type != "cpu":
        return False, {"compile_reason": f"auto: no measured break-even on {device.type}; eager"}
    if train_flops is None:
        return False, {"compile_reason": "auto: training cost unknown for this model; eager"}
    rule = COMPILE_RULE
    secs = rule.expected_seconds(train_flops, precision)
    notes = {"expected_eager_s": round(secs, 1)}
    if rule.pays(train_flops, precision):
        return True, {**notes, "compile_reason": f"auto: long run (expected eager training >= "
                                                 f"{rule.break_even_s:.0f} s break-even)"}
    return False, {**notes, "compile_reason": f"auto: short run (expected eager training < "
                                              f"{rule.break_even_s:.0f} s break-even)"}


def training_flops(model: str, *, num_classes: int, in_chans: int, img_size: int | tuple[int, int], samples: int,
                   model_kwargs: Mapping[str, Any] | None = None) -> float | None:
    """Expected FLOPs of training on ``samples`` sample-passes (forward + backward = 3 x forward)."""
    f = forward_flops(model, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                      model_kwargs=model_kwargs)
    return None if f is None else 3.0 * f * int(samples)


def samples_trained(protocol: TrainProtocol, n: int, epochs: int | None = None) -> int:
    """Sample-passes of a run on ``n`` samples: the protocol's (``iterations`` x batch, capped at whole
    passes) or ``epochs`` passes when given (a run cut short)."""
    if epochs is not None:
        return int(epochs) * int(n)
    if protocol.iterations is not None:
        return min(protocol.iterations * protocol.batch_size, protocol.epochs_for(n) * n)
    return protocol.total_epochs * int(n)


def engine_notes(notes: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved engine fields of an ``EvalResult.extra`` (or of a dynamics run's record)."""
    keys = ("path", "precision", "precision_reason", "precision_fallback", "compile", "compile_reason",
            "path_fallback", "host_malloc")
    return {k: notes[k] for k in keys if k in notes}


__all__ = ["COMPILE_CHOICES", "COMPILE_RULE", "DEFAULT", "PATHS", "PRECISIONS", "PRECISION_CHOICES", "CompileRule",
           "EngineOptions", "bf16_supported", "can_ensemble", "choose_compile", "choose_path", "engine_notes",
           "forward_flops", "resolve_precision", "samples_trained", "training_flops"]
