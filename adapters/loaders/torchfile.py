"""Safe reading of ``.pt`` files: tensors, containers and the numpy scalars old files pickle."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.errors import FormatError


def _numpy_globals() -> list[Any]:
    from numpy._core.multiarray import _reconstruct, scalar

    return [(scalar, "numpy.core.multiarray.scalar"), (_reconstruct, "numpy.core.multiarray._reconstruct"),
            np.ndarray, np.dtype, type(np.dtype("float64")), type(np.dtype("float32")),
            type(np.dtype("int64")), type(np.dtype("int32"))]


def load_pt(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (no code runs), allowing numpy scalars and arrays."""
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(f"{path}: not a readable PyTorch file (truncated or corrupt?): {first}") from None
