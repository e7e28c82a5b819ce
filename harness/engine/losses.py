"""Losses and per-sample loss weightings, registered once for every trainer (sequential, ensemble, DDP).

``TrainProtocol.loss`` names a :class:`Loss` (``ce``, ``soft_ce``, ``mse``); ``TrainProtocol.loss_weighting``
names a :class:`LossWeighting`. Every trainer looks both up here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from harness.errors import ConfigError
from harness.registry import Registry


# --- losses ----------------------------------------------------------------------------------------
def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_B( -sum_c t_c log softmax(z)_c )``: cross-entropy against label vectors (soft labels)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _soft_ce_per_sample(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


@dataclass(frozen=True)
class Loss:
    """A training loss in two forms.

    ``mean(logits, target)``: the batch loss (mean over the batch) the sequential trainers minimise;
    ``per_sample(logits, target)``: ``(B, C), target -> (B,)``, for a loss weighting and for the ensemble's
    per-model reduction (``per_sample(...).view(K, B).mean(1)``). ``targets``: ``"hard"`` (class indices
    ``(B,)``) or ``"soft"`` (label vectors ``(B, C)``).
    """

    name: str
    mean: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    targets: str
    doc: str = ""


LOSSES: Registry[Loss] = Registry("loss")


def register_loss(loss: Loss) -> Loss:
    return LOSSES.register(loss.name, loss)


def list_losses() -> list[str]:
    return LOSSES.names()


def get_loss(name: str) -> Loss:
    return LOSSES.get(name)


register_loss(Loss("ce", F.cross_entropy, lambda z, y: F.cross_entropy(z, y, reduction="none"), "hard",
                   "cross-entropy with class indices"))
register_loss(Loss("soft_ce", soft_cross_entropy, _soft_ce_per_sample, "soft",
                   "cross-entropy against label vectors (soft labels, never rounded)"))
register_loss(Loss("mse", F.mse_loss, lambda z, t: F.mse_loss(z, t, reduction="none").mean(1), "soft",
                   "mean squared error to label vectors (regression targets, e.g. KIP's learned labels)"))



# --- per-sample loss weightings ------------------------------------------------------------------
@dataclass(frozen=True)
class LossWeighting:
    """How a protocol weights the training loss by per-sample weights.

    ``weights(scores)``: an index-aligned score array over the **whole** training set -> index-aligned
    weights (the flow then takes the kept samples' rows and hands them to :meth:`Trainer.fit`).
    ``apply(losses, w)``: per-sample losses ``(..., B)`` and the batch's weights ``(..., B)`` -> the loss
    ``(...)`` to minimise (a leading model axis is allowed, for :mod:`harness.engine.ensemble`).
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


def batch_loss(loss: Loss, logits: torch.Tensor, y: torch.Tensor, *, weighting: LossWeighting | None = None,
               weights: torch.Tensor | None = None, partner_y: torch.Tensor | None = None,
               lam: float | None = None) -> torch.Tensor:
    """The loss one model minimises on one batch (the sequential and DDP trainers).

    Unweighted: ``loss.mean(z, y)``; with CutMix (``partner_y``, ``lam``): ``lam L(z, y) + (1 - lam) L(z, y')``
    (Yun et al. 2019; IDC ``train.py``). With a loss ``weighting`` the same on the per-sample losses, then
    ``weighting.apply(per_sample, weights)``.
    """
    if weighting is None:
        if partner_y is None:
            return loss.mean(logits, y)
        return lam * loss.mean(logits, y) + (1 - lam) * loss.mean(logits, partner_y)
    if partner_y is None:
        per = loss.per_sample(logits, y)
    else:
        per = lam * loss.per_sample(logits, y) + (1 - lam) * loss.per_sample(logits, partner_y)
    return weighting.apply(per, weights)

