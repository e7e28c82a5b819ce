"""Host memory for CPU runs: keep freed tensor memory in the process instead of handing it back to the OS.

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves blocks above its mmap threshold
(dynamic, at most 32 MiB on 64-bit) with a fresh ``mmap`` and returns them with ``munmap`` on free, and it
trims the top of the heap past 128 KiB free. A training step that makes and frees activations of hundreds of
MiB therefore maps and zero-fills them again at every step: measured on this project's 2-core EPYC VM
(issue 14), a ConvNet-3 forward + backward on 256 MNIST images (bf16, compiled) took 114,659 minor page faults
per step and 0.396 s; with the two thresholds below, 0 page faults and 0.316 s. fp32 eager went from 0.849 s
to 0.558 s. The numbers computed do not change (only where the memory comes from).

:func:`keep_freed_memory` sets, once per process, glibc's ``M_MMAP_THRESHOLD`` to 2 GiB - 1 (blocks below
come from the heap and are reused; DM's batched first layer on 2,560 MNIST images is 1.3 GB in fp32) and
``M_TRIM_THRESHOLD`` to 2 GiB - 1 (freed heap is kept). The cost: the
process keeps its peak heap until it exits, as PyTorch's CUDA caching allocator does on a GPU. It is applied
when a run resolves its engine on the CPU (:func:`harness.engine.options.resolve_precision`,
``adapters.condense.base.resolve_engine``) and recorded there (``host_malloc``). ``DDBENCH_MALLOC=system``
leaves the C library's defaults alone. Outside glibc (macOS, musl) nothing is changed and the record says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import torch

from harness.errors import ConfigError

ENV = "DDBENCH_MALLOC"
CHOICES = ("keep", "system")
M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = (1 << 31) - 1  # bytes: blocks below come from the heap (mallopt takes a C int)
TRIM_THRESHOLD = (1 << 31) - 1  # bytes of free heap kept (mallopt takes a C int)
KEPT = "glibc keeps freed memory (mmap and trim thresholds 2 GiB)"

_state: dict[str, str] = {}  # the process's record, once set


def requested() -> str:
    """``DDBENCH_MALLOC`` (``keep``, the default, or ``system``); anything else is refused."""
    value = os.environ.get(ENV, "keep").strip().lower() or "keep"
    if value not in CHOICES:
        raise ConfigError(f"{ENV}={os.environ[ENV]!r}: expected one of {list(CHOICES)}")
    return value


def _mallopt():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.mallopt
    except (OSError, AttributeError):
        return None


def keep_freed_memory(device: str | torch.device = "cpu") -> dict[str, str]:
    """Apply the setting of the module doc for a run on ``device`` (CPU only) and return the record,
    ``{"host_malloc": ...}``; ``{}`` for other devices. Idempotent: the first call decides for the process."""
    if torch.device(device).type != "cpu":
        return {}
    if not _state:
        if requested() == "system":
            _state["host_malloc"] = f"system defaults ({ENV}=system)"
        else:
            mallopt = _mallopt()
            if mallopt is None:
                _state["host_malloc"] = "system defaults (not glibc)"
            elif mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
                _state["host_malloc"] = KEPT
            else:
                _state["host_malloc"] = "system defaults (mallopt refused the thresholds)"
    return dict(_state)


__all__ = ["CHOICES", "ENV", "KEPT", "keep_freed_memory", "requested"]
