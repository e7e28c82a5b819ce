"""How a training run executes (never what it computes): :class:`EngineOptions`.

A :class:`harness.engine.TrainProtocol` decides an accuracy; :class:`EngineOptions` decides how the
hardware gets there:

- ``path``: ``sequential`` (one :class:`harness.engine.Trainer` per seed), ``ensemble`` (the K seeds
  trained together as one vmapped program, :mod:`harness.engine.ensemble`; on the CPU too when asked
  for explicitly) or ``auto`` (ensemble on CUDA for K > 1 when the model allows it, else sequential).
  BatchNorm models always run sequentially (:func:`choose_path`).
- ``precision``: ``None`` keeps the protocol's (``fp32`` in every preset); ``"fp32"`` / ``"bf16"``
  override it. bf16 on a device without native bf16 runs fp32 and says so (:func:`resolve_precision`).
- ``compile``: ``torch.compile`` the model's forward (fused kernels: the same numbers up to float rounding).

The default ``EngineOptions()`` reproduces the protocol's fp32 numbers bit for bit on the sequential path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from harness.engine.protocol import TrainProtocol
from harness.errors import ConfigError
from harness.models import has_running_stats

PATHS = ("auto", "ensemble", "sequential")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class EngineOptions:
    """How runs execute: ``path`` (auto | sequential | ensemble), ``precision`` (None = the protocol's, or
    fp32 | bf16) and ``compile`` (torch.compile the model)."""

    path: str = "auto"
    precision: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.path not in PATHS:
            raise ConfigError(f"engine option path={self.path!r}, expected one of {list(PATHS)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"engine option precision={self.precision!r}, expected None or one of "
                              f"{list(PRECISIONS)}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"engine option compile={self.compile!r}, expected true or false")

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

    ``options.precision`` (else the protocol's); a bf16 request on a device without native bf16 runs fp32
    (``notes["precision_fallback"]`` says so). The returned protocol is the one to record: its ``precision``
    is what ran.
    """
    options = options or DEFAULT
    device = torch.device(device)
    notes: dict[str, Any] = {}
    precision = options.precision or protocol.precision
    if precision == "bf16" and not bf16_supported(device):
        notes["precision_fallback"] = f"bf16 requested but not native on {device}; ran fp32"
        precision = "fp32"
    if precision != protocol.precision:
        protocol = protocol.with_(precision=precision)
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


__all__ = ["DEFAULT", "PATHS", "PRECISIONS", "EngineOptions", "bf16_supported", "can_ensemble", "choose_path",
           "resolve_precision"]
