"""GoldFromOres / BiLP pre-pruning (Xu et al., "Distill Gold from Massive Ores: Bi-level Data
Pruning towards Efficient Dataset Distillation", ECCV 2024; arXiv 2305.18381).

Before condensing, drop a fraction of the real training data per class by a criterion score:

- ``LossInit``: per-sample cross-entropy early in training, the mean over the first ``epochs``
  epochs (default 1) of a model trained on the real data (each sample's loss is recorded at the
  batch it is trained in, train-mode logits, by the pruning core's :class:`harness.dynamics.DynamicsRecorder`;
  ``stat('loss')`` is (epochs, N) in dataset order).
- ``LossConverge``: per-sample cross-entropy of a model trained for ``epochs`` (default 20) epochs,
  measured in eval mode after training.
- ``MonteCarlo``: utility u(x) = mean over trials whose random real subset contains x of the
  accuracy of a condensation run on that subset (default DM, ipc 1), measured on the real images
  outside the subset (never the test split). ``subset_fraction`` is the per-class subset budget.
  Samples in no trial get the mean accuracy.
- ``Random``: seeded uniform scores (a seeded random drop per class).

``{Criterion}_large`` drops the samples with the largest scores, ``{Criterion}_small`` the
smallest. As in ``drop_utils/drop.py``, the ranking is **per class**: within class c (n_c samples)
the ``int(drop_ratio * n_c)`` highest (``_large``) or lowest (``_small``) scored samples are dropped
(ties: dataset order decides, stable sort). Exactly one of ``drop_ratio`` (in [0, 1)) and
``keep_ratio`` (in (0, 1]) is given; ``keep_ratio = k`` means ``drop_ratio = round(1 - k, 12)``
(the reference's 1 - k without its float error, so keep 0.9 of 10 drops 1, not 0).

Scores are index-aligned with the data they were computed on, never sorted; they are cached on disk
(``<cache>/goldfromores/<hash>.npy`` + ``.json``), keyed by a hash of the data (images and labels),
the criterion, its parameters and the seed, and reused across runs.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.images import LabeledImages
from harness.errors import ConfigError
from harness.io import atomic_write_bytes, atomic_write_json
from harness.registry import Registry, near_matches

ScoreFn = Callable[[LabeledImages, dict[str, Any], int, torch.device], np.ndarray]
CRITERIA: Registry[ScoreFn] = Registry("GoldFromOres criterion")
ORDERS = ("large", "small")
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {}


def register_criterion(name: str, **defaults: Any):
    DEFAULT_PARAMS[name] = defaults
    return CRITERIA.register(name)


def criterion_names() -> list[str]:
    """Every accepted spelling: ``Random`` and ``{Indicator}_{large|small}``."""
    return [n for i in CRITERIA.names() for n in ([i] if i == "Random" else [f"{i}_{o}" for o in ORDERS])]


def parse_criterion(name: str) -> tuple[str, str]:
    """``"LossInit_large"`` -> ("LossInit", "large"); ``"Random"``/``"rand"`` -> ("Random", "large")."""
    if name.lower() in ("random", "rand"):
        return "Random", "large"
    ind, _, order = name.rpartition("_")
    lookup = {k.lower(): k for k in CRITERIA.names()}
    if ind.lower() in lookup and ind.lower() != "random" and order.lower() in ORDERS:
        return lookup[ind.lower()], order.lower()
    near = near_matches(name, criterion_names())
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise ConfigError(f"unknown drop criterion {name!r}{hint} (known: {', '.join(criterion_names())})")


@dataclass(frozen=True)
class PrePrune:
    """What to drop before condensing: ``PrePrune("LossInit_large", drop_ratio=0.5)``."""

    criterion: str
    drop_ratio: float | None = None
    keep_ratio: float | None = None
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)  # criterion settings (epochs, trials, ...)

    def __post_init__(self) -> None:
        parse_criterion(self.criterion)
        if (self.drop_ratio is None) == (self.keep_ratio is None):
            raise ConfigError("give exactly one of drop_ratio and keep_ratio")
        if self.drop_ratio is not None and not 0.0 <= self.drop_ratio < 1.0:
            raise ConfigError(f"drop_ratio {self.drop_ratio} is outside [0, 1)")
        if self.keep_ratio is not None and not 0.0 < self.keep_ratio <= 1.0:
            raise ConfigError(f"keep_ratio {self.keep_ratio} is outside (0, 1]")
        ind, _ = parse_criterion(self.criterion)
        unknown = sorted(set(self.params) - set(DEFAULT_PARAMS[ind]))
        if unknown:
            raise ConfigError(f"{ind}: unknown parameters {unknown} (known: {sorted(DEFAULT_PARAMS[ind])})")

    @property
    def drop_fraction(self) -> float:
        return float(self.drop_ratio) if self.drop_ratio is not None else round(1.0 - float(self.keep_ratio), 12)

    @property
    def indicator(self) -> str:
        return parse_criterion(self.criterion)[0]

    @property
    def order(self) -> str:
        return parse_criterion(self.criterion)[1]

    def resolved_params(self) -> dict[str, Any]:
        return {**DEFAULT_PARAMS[self.indicator], **self.params}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_fraction": self.drop_fraction, "params": self.resolved_params()}


# --- selection -----------------------------------------------------------------------------------
def drop_counts(counts: list[int], drop_ratio: float) -> list[int]:
    return [int(drop_ratio * n) for n in counts]


def select_drops(scores: np.ndarray, labels: np.ndarray | torch.Tensor, num_classes: int, drop_ratio: float,
                 order: str) -> np.ndarray:
    """Indices (sorted) to drop: per class the ``int(drop_ratio * n_c)`` largest/smallest scores."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if scores.shape != labels.shape:
        raise ConfigError(f"{scores.shape[0]} scores for {labels.shape[0]} samples; scores must be index-aligned")
    if order not in ORDERS:
        raise ConfigError(f"order {order!r}: expected one of {ORDERS}")
    if not np.isfinite(scores).all():
        raise ConfigError("criterion scores hold NaN or infinite values")
    key = -scores if order == "large" else scores
    out = []
    for c in range(num_classes):
        idx = np.nonzero(labels == c)[0]
        k = int(drop_ratio * idx.size)
        out.append(idx[np.argsort(key[idx], kind="stable")[:k]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def drop_samples(real: LabeledImages, spec: PrePrune, *, scores: np.ndarray | None = None,
                 cache_dir: str | Path | None = None, device: str | torch.device = "cpu"
                 ) -> tuple[LabeledImages, torch.Tensor, dict[str, Any]]:
    """Apply ``spec`` to ``real``: (kept data, kept indices into ``real``, a summary for provenance)."""
    if scores is None:
        scores = compute_scores(real, spec, cache_dir=cache_dir, device=device)
    dropped = select_drops(scores, real.labels, real.num_classes, spec.drop_fraction, spec.order)
    keep = np.ones(len(real), dtype=bool)
    keep[dropped] = False
    kept = torch.from_numpy(np.nonzero(keep)[0])
    info = {"criterion": spec.criterion, "drop_fraction": spec.drop_fraction, "n_before": len(real),
            "n_after": int(kept.numel()), "dropped_per_class": np.bincount(
                real.labels.cpu().numpy()[dropped], minlength=real.num_classes).tolist()}
    return real.subset(kept.to(real.images.device)), kept, info


# --- scores and their cache ----------------------------------------------------------------------
def score_key(data: LabeledImages, indicator: str, params: dict[str, Any], seed: int) -> str:
    from adapters.condense.base import fingerprint

    blob = {"dataset": data.name, "data": fingerprint(data), "criterion": indicator, "params": params, "seed": seed}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


def compute_scores(data: LabeledImages, spec: PrePrune, *, cache_dir: str | Path | None = None,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Index-aligned criterion scores for ``data``; read from / written to ``cache_dir`` when given."""
    ind, params = spec.indicator, spec.resolved_params()
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "goldfromores" / f"{ind}-{score_key(data, ind, params, spec.seed)}.npy"
        if path.is_file():
            s = np.load(path)
            if s.shape == (len(data),):
                return s
    s = np.asarray(CRITERIA.get(ind)(data, params, spec.seed, torch.device(device)), dtype=np.float64)
    if s.shape != (len(data),):
        raise ConfigError(f"criterion {ind} returned {s.shape} scores for {len(data)} samples")
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, s)
        atomic_write_bytes(path, buf.getvalue())
        atomic_write_json(path.with_suffix(".json"), {"dataset": data.name, "n": len(data), "criterion": ind,
                                                      "params": params, "seed": spec.seed,
                                                      "order": "dataset order (index-aligned)"})
    return s


def _loss_protocol(params: dict[str, Any], epochs: int):
    from harness.train import Protocol

    return Protocol("goldfromores-loss", model=params["model"], epochs=epochs, batch_size=params["batch_size"],
                    lr=params["lr"], momentum=0.9, weight_decay=5e-4, schedule="constant", runs=1)


def _train_and_record(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device, epochs: int
                      ) -> tuple[np.ndarray, torch.nn.Module, torch.Tensor]:
    from harness.dynamics import DynamicsRecorder
    from harness.models import create_model
    from harness.train import Trainer, seeded_model

    proto = _loss_protocol(params, epochs)
    x = data.normalized().to(device)
    y = data.labels.to(device)
    model = seeded_model(lambda: create_model(params["model"], num_classes=data.num_classes, in_chans=data.channels,
                                              img_size=data.size, **params["model_kwargs"]), seed).to(device)
    rec = DynamicsRecorder(len(data), data.num_classes, out_dir=None, labels=data.labels.cpu().numpy(),
                           meta={"purpose": "goldfromores", "dataset": data.name, "seed": seed})
    Trainer(model, proto, seed=seed, hooks=[rec]).fit(x, y, labels=y)
    rec.finish()
    return np.asarray(rec.dynamics().stat("loss"), dtype=np.float64), model, x


_LOSS_DEFAULTS = {"model": "convnet", "model_kwargs": {}, "batch_size": 256, "lr": 0.01}


@register_criterion("LossInit", epochs=1, **_LOSS_DEFAULTS)
def loss_init(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device) -> np.ndarray:
    """Mean per-sample training cross-entropy over the first ``epochs`` epochs (from one seeded model)."""
    loss, _, _ = _train_and_record(data, params, seed, device, int(params["epochs"]))
    return loss.mean(0)


@register_criterion("LossConverge", epochs=20, **_LOSS_DEFAULTS)
def loss_converge(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device) -> np.ndarray:
    """Per-sample cross-entropy (eval mode) of a model trained ``epochs`` epochs on the data."""
    from harness.train import predict

    _, model, x = _train_and_record(data, params, seed, device, int(params["epochs"]))
    logits = predict(model, x)
    return F.cross_entropy(logits, data.labels.to(logits.device), reduction="none").cpu().numpy()


@register_criterion("MonteCarlo", trials=20, subset_fraction=0.1, method="dm", ipc=1, iterations=20,
                    eval_epochs=50, eval_size=2000, model="convnet", model_kwargs={})
def monte_carlo(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device) -> np.ndarray:
    """u(x) = mean accuracy of condensation runs on random per-class subsets (budget ``subset_fraction``)
    that contain x; accuracy measured on up to ``eval_size`` real images outside the subset."""
    from adapters.condense.base import create_condenser, derive_seed
    from harness.evaluate import evaluate_set
    from harness.train import get_protocol

    n = len(data)
    total, count, accs = np.zeros(n), np.zeros(n), []
    cond = create_condenser(params["method"])
    cfg = cond.default_config(iterations=int(params["iterations"]), model=params["model"],
                              model_kwargs=dict(params["model_kwargs"]))
    classes = [idx.cpu() for idx in data.class_indices()]
    for t in range(int(params["trials"])):
        g = torch.Generator().manual_seed(derive_seed(seed, t))
        sub = []
        for idx in classes:
            k = max(int(params["ipc"]), int(round(params["subset_fraction"] * idx.numel())))
            sub.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
        sub_idx = torch.cat(sub).sort().values
        rest = torch.ones(n, dtype=torch.bool)
        rest[sub_idx] = False
        rest_idx = torch.nonzero(rest).flatten()
        rest_idx = rest_idx[torch.randperm(rest_idx.numel(), generator=g)[:int(params["eval_size"])]].sort().values
        cs = cond.condense(data.subset(sub_idx), int(params["ipc"]), cfg, seed=derive_seed(seed, t, 1), device=device)
        proto = get_protocol("vico-dc", data.name.split(":")[0]).with_(epochs=int(params["eval_epochs"]),
                                                                       model=params["model"])
        res = evaluate_set(cs.decoded().to_labeled(), data.subset(rest_idx), proto, runs=1,
                           seed=derive_seed(seed, t, 2), device=device)
        total[sub_idx.numpy()] += res.mean
        count[sub_idx.numpy()] += 1
        accs.append(res.mean)
    fill = float(np.mean(accs)) if accs else 0.0
    return np.where(count > 0, total / np.maximum(count, 1), fill)


@register_criterion("Random")
def random_scores(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device) -> np.ndarray:
    """Seeded uniform scores: dropping the largest is a seeded random drop per class."""
    return np.random.default_rng(seed).random(len(data))
