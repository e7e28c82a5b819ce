"""GoldFromOres (Xu et al., "Distill Gold from Massive Ores: Bi-level Data Pruning towards Efficient Dataset
Distillation", ECCV 2024; github silicx/GoldFromOres @ 0b5f6ff8): the one definition of its drop rule, of
the training run behind its loss criteria, and of its released per-sample scores.

Both users go through here: the condense pre-pruning (:mod:`adapters.condense.goldfromores`) and the
``LossInit_*`` / ``LossConverge_*`` recipes (:mod:`harness.pruning.recipes`).

- **Drop rule** (``drop_utils/drop.py`` ``sample_indices_to_drop``, lines 44-55): within each class c
  (indices in dataset order), sort ascending by the score -- negated for ``_large`` -- with a stable sort
  (Python ``sorted``), and drop the first ``int(drop_ratio * n_c)``. Registered as the selection rule
  ``drop_per_class`` (``order="large"|"small"``; the budget is a prune rate or a keep fraction).
- **Scores**: ``loss_init`` (mean training-time loss over the first 2 epochs) and ``loss_converge``
  (eval-mode loss of the trained model) in :mod:`harness.pruning.scores`, with the reasoning for both.
- **Scoring run** (:class:`LossRun`, :func:`record_loss_run`): a model trained on the real data with VICO's
  network-training optimiser (SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256, constant lr, no
  augmentation), recording dynamics, then one eval pass. The authors never released this code; the
  model (the DD ConvNet) and the optimiser are the ones of the VICO code their repository vendors.
- **Released scores** (:func:`authors_scores`): ``<data_root>/goldfromores/<DATASET>_<Indicator>.json``,
  one float per training image in the official torchvision order, mapped onto our loader's order by
  :mod:`harness.data.official`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from harness.data.images import LabeledImages
from harness.data.official import ORDERS as OFFICIAL
from harness.data.official import get_order, official_index
from harness.data.specs import resolve_root
from harness.dynamics import record_dynamics
from harness.engine.options import EngineOptions
from harness.engine.protocol import TrainProtocol
from harness.errors import ConfigError, DatasetNotFoundError, FormatError
from harness.evaluate import model_input
from harness.pruning.scores import FinalEval, final_eval
from harness.pruning.select import Budget, register_rule

ORDERS = ("large", "small")
AUTHORS_REPO = "silicx/GoldFromOres@0b5f6ff8 drop_utils/resource"
# (DATASET, Indicator) pairs whose scores the authors released (condensation-methods.md §6.1)
RELEASED: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "MNIST": ("LossConverge", "MonteCarlo"),
    "CIFAR10": ("LossInit", "LossConverge", "MonteCarlo"),
    "CIFAR100": ("LossInit", "LossConverge", "MonteCarlo"),
    "SVHN": ("LossConverge", "MonteCarlo"),
    "TinyImageNet": ("LossConverge",),
})


# --- the drop rule --------------------------------------------------------------------------------
def drop_per_class(scores, labels, num_classes: int, drop_ratio: float, order: str) -> np.ndarray:
    """Indices (sorted, int64) to drop: in each class the ``int(drop_ratio * n_c)`` largest (``order="large"``)
    or smallest scores; ties drop the earlier index first (the authors' stable ``sorted``)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64).reshape(-1)
    if scores.shape != labels.shape:
        raise ConfigError(f"{scores.shape[0] if scores.ndim else 0} scores for {labels.shape[0]} samples; "
                          "scores must be index-aligned with the data")
    if order not in ORDERS:
        raise ConfigError(f"order {order!r}: expected one of {ORDERS}")
    if not 0.0 <= float(drop_ratio) < 1.0:
        raise ConfigError(f"drop ratio {drop_ratio} is outside [0, 1)")
    if not np.isfinite(scores).all():
        raise ConfigError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    key = -scores if order == "large" else scores
    out = [np.zeros(0, dtype=np.int64)]
    for c in range(int(num_classes)):
        idx = np.flatnonzero(labels == c)
        k = int(drop_ratio * idx.size)
        out.append(idx[np.argsort(key[idx], kind="stable")[:k]])
    return np.sort(np.concatenate(out)).astype(np.int64)


def keep_to_drop_ratio(keep_ratio: float) -> float:
    """``1 - keep_ratio`` without its float error (the reference's ``1 - 0.9`` = 0.0999... drops 0 of 10)."""
    return round(1.0 - float(keep_ratio), 12)


def budget_drop_ratio(budget: Budget) -> float:
    """The per-class drop ratio a budget means for GoldFromOres: a prune rate, or one minus a keep fraction."""
    if budget.kind == "prune_rate":
        return float(budget.value)
    if budget.kind == "keep_fraction":
        return keep_to_drop_ratio(budget.value)
    raise ConfigError(f"budget {budget}: GoldFromOres drops a ratio of each class; give a prune rate "
                      "(--prune) or a keep fraction (--keep)")


@register_rule("drop_per_class")
def drop_per_class_rule(scores, labels, budget: Budget, *, seed: int, order: str = "large",
                        num_classes: int | None = None) -> np.ndarray:
    """Kept indices (sorted) after :func:`drop_per_class` at the budget's drop ratio. ``seed`` is unused."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if labels.size == 0:
        raise ConfigError("no samples to select from")
    if scores is None:
        raise ConfigError("drop_per_class needs scores")
    nc = int(num_classes or labels.max() + 1)
    dropped = drop_per_class(scores, labels, nc, budget_drop_ratio(budget), order)
    keep = np.ones(labels.size, dtype=bool)
    keep[dropped] = False
    return np.flatnonzero(keep).astype(np.int64)


# --- the scoring run ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LossRun:
    """The training run whose dynamics / final model the loss criteria read."""

    epochs: int
    model: str = "convnet"
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 256
    lr: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_kwargs", dict(self.model_kwargs))  # a copy (asdict cannot take a proxy)
        if int(self.epochs) < 1 or int(self.batch_size) < 1 or not float(self.lr) > 0:
            raise ConfigError(f"GoldFromOres scoring run: epochs {self.epochs}, batch_size {self.batch_size} "
                              f"and lr {self.lr} must be positive")

    def protocol(self) -> TrainProtocol:
        return TrainProtocol("goldfromores-loss", model=self.model, epochs=int(self.epochs),
                             batch_size=int(self.batch_size), lr=float(self.lr), momentum=0.9, weight_decay=5e-4,
                             schedule="constant", augment="none", runs=1)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model_kwargs": dict(self.model_kwargs)}


@dataclass(frozen=True)
class LossRunResult:
    dynamics: Any  # harness.dynamics.Dynamics, ``epochs`` rows
    final: FinalEval | None  # the eval pass after the last epoch (None with evaluate=False)
    evals: Mapping[int, FinalEval]  # extra eval passes after the epochs asked for in ``eval_after``


class _EvalAfter:
    """A :class:`harness.engine.TrainHook` that takes the model's eval pass after the epochs in ``stops``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, stops: Sequence[int], meta: dict[str, Any]) -> None:
        self.x, self.y, self.stops, self.meta = x, y, set(stops), meta
        self.evals: dict[int, FinalEval] = {}

    def on_batch(self, epoch: int, index: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        pass

    def on_epoch_end(self, epoch: int, trainer: Any) -> None:
        if epoch + 1 in self.stops:
            self.evals[epoch + 1] = final_eval(trainer.model, self.x, self.y, meta={**self.meta, "epochs": epoch + 1})


def record_loss_run(data: LabeledImages, run: LossRun, *, seed: int, device: str | torch.device = "cpu",
                    evaluate: bool = True, eval_after: Sequence[int] = (),
                    options: EngineOptions | None = None) -> LossRunResult:
    """Train a fresh seeded model on ``data`` for ``run.epochs`` epochs with
    :func:`harness.dynamics.record_dynamics` (in memory), then the final model's eval pass (``evaluate``) and
    one after each ``eval_after`` epoch (the trainer's ``model.train()`` at each epoch start undoes the eval
    mode). The first E epochs do not depend on ``run.epochs`` (constant lr, one seeded order)."""
    device = torch.device(device)
    x, y = model_input(data).to(device), data.labels.to(device)
    meta = {"purpose": "goldfromores", "dataset": data.name, "seed": seed, "run": run.as_dict()}
    stops = {int(e) for e in eval_after if 1 <= int(e) < int(run.epochs)}
    if evaluate:
        stops.add(int(run.epochs))
    hook = _EvalAfter(x, y, sorted(stops), meta)
    dyn = record_dynamics(data, run.protocol(), seed=seed, device=device, model_kwargs=run.model_kwargs,
                          options=options, hooks=[hook])
    evals = dict(hook.evals)
    final = evals.pop(int(run.epochs), None)
    return LossRunResult(dyn, final, MappingProxyType(evals))


# --- score files ----------------------------------------------------------------------------------
def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_score_file(path: str | Path, n: int | None = None) -> np.ndarray:
    """A 1-D float64 score array from ``.json`` (a list of numbers) or ``.npy``; length ``n``; no NaN/inf."""
    p = Path(path)
    if not p.is_file():
        raise DatasetNotFoundError(f"{p}: no such score file (expected a .json list or a 1-D .npy)")
    try:
        if p.suffix.lower() == ".json":
            arr = np.asarray(json.loads(p.read_text()), dtype=np.float64)
        elif p.suffix.lower() == ".npy":
            arr = np.asarray(np.load(p, allow_pickle=False), dtype=np.float64)
        else:
            raise FormatError(f"{p}: scores must be a .json list or a .npy array")
    except (OSError, ValueError, TypeError) as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"{p}: not a readable list of numbers ({e})") from None
    if arr.ndim != 1:
        raise FormatError(f"{p}: scores of shape {arr.shape}, expected 1-D (one per training sample)")
    if n is not None and arr.shape[0] != n:
        raise FormatError(f"{p}: {arr.shape[0]} scores, expected {n} (one per training sample, index-aligned)")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise FormatError(f"{p}: {int(bad.sum())} scores are NaN or infinite (first at index {int(np.argmax(bad))})")
    return arr


def split_name(name: str) -> tuple[str, str]:
    """``"mnist:train"`` -> ("mnist", "train")."""
    ds, _, split = (name or "").partition(":")
    return ds, split or "train"


def check_released(dataset: str, indicator: str) -> str:
    """The authors' file stem ``<DATASET>_<Indicator>``, or a ConfigError if they never released that pair."""
    if dataset not in OFFICIAL:
        raise ConfigError(f"--drop-scores authors: the GoldFromOres authors released no scores for dataset "
                          f"{dataset!r} (released: {_released_list()})")
    order = OFFICIAL.get(dataset)
    if indicator not in RELEASED.get(order.official, ()):
        raise ConfigError(f"--drop-scores authors: the GoldFromOres authors never released {indicator} scores for "
                          f"{order.official} (released: {_released_list()})")
    if order.index is None:
        raise ConfigError(f"--drop-scores authors: {dataset}: {order.refused}")
    return f"{order.official}_{indicator}"


def _released_list() -> str:
    return "; ".join(f"{d} {'/'.join(v)}" for d, v in RELEASED.items())


def authors_scores(dataset: str, indicator: str, labels, data_root: str | Path | None = None
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """The authors' released ``indicator`` scores for ``dataset``'s training split, in OUR sample order,
    and a provenance record (file, md5, how the order was mapped)."""
    stem = check_released(dataset, indicator)
    root = resolve_root(data_root)
    path = root / "goldfromores" / f"{stem}.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: not found; the authors' file {stem}.json ({AUTHORS_REPO}) is expected "
                                   "under <data root>/goldfromores/")
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(np.int64)
    src = official_index(dataset, labels, root)
    official = read_score_file(path, labels.size)
    info = {"source": "authors", "file": path.name, "md5": md5_of(path), "released": AUTHORS_REPO,
            "order": get_order(dataset).how}
    return official[src], info


def file_scores(path: str | Path, n: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Scores from a user's file (index-aligned with OUR dataset order) and their provenance."""
    p = Path(path)
    return read_score_file(p, n), {"source": "file", "file": str(p), "md5": md5_of(p),
                                   "order": "as given (index-aligned with our dataset order)"}
