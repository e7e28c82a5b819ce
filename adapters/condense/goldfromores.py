"""GoldFromOres / BiLP pre-pruning (Xu et al., "Distill Gold from Massive Ores: Bi-level Data
Pruning towards Efficient Dataset Distillation", ECCV 2024; arXiv 2305.18381; github silicx/GoldFromOres).

Before condensing, drop a fraction of the real training data per class by a criterion score. The
definitions live in the pruning core and are shared with the ``LossInit_*`` / ``LossConverge_*`` recipes
(:mod:`harness.pruning.goldfromores`, :mod:`harness.pruning.scores`, which give the reasoning):

- ``LossInit``: ``scores.loss_init``, the mean training-time cross-entropy over the first ``epochs``
  (default 2) epochs of a model trained on the real data (:func:`harness.pruning.goldfromores.record_loss_run`:
  ConvNet, SGD 0.01 / 0.9 / 5e-4, batch 256, constant lr, no augmentation, seeded).
- ``LossConverge``: ``scores.loss_converge``, the eval-mode cross-entropy of each training image under the
  same kind of model after ``epochs`` (default 10) epochs.
- ``MonteCarlo``: utility u(x) = mean over trials whose random real subset contains x of the
  accuracy of a condensation run on that subset (default DM, ipc 1), measured on the real images
  outside the subset (never the test split). ``subset_fraction`` is the per-class subset budget.
  Samples in no trial get the mean accuracy.
- ``Random``: seeded uniform scores (a seeded random drop per class).

``{Criterion}_large`` drops the samples with the largest scores, ``{Criterion}_small`` the smallest, per
class by the authors' rule (``drop_utils/drop.py``; :func:`harness.pruning.goldfromores.drop_per_class`):
within class c (n_c samples) the ``int(drop_ratio * n_c)`` highest (``_large``) or lowest (``_small``) are
dropped (ties: dataset order decides, stable sort). Exactly one of ``drop_ratio`` (in [0, 1)) and
``keep_ratio`` (in (0, 1]) is given; ``keep_ratio = k`` means ``drop_ratio = round(1 - k, 12)`` (the
reference's 1 - k without its float error, so keep 0.9 of 10 drops 1, not 0).

Where the scores come from (``PrePrune.scores``): ``None`` computes the criterion (cached on disk under
``<cache>/goldfromores/<hash>.npy`` + ``.json``, keyed by a hash of the data, the criterion, its parameters
and the seed); ``"authors"`` reads the authors' released ``<data_root>/goldfromores/<DATASET>_<Indicator>.json``
mapped from the official torchvision order onto our loader's order (:mod:`harness.data.official`); any
other string is a ``.json`` list or ``.npy`` array index-aligned with OUR dataset order. Scores are never
sorted; the condensed set's provenance records which were used (file name + md5, or criterion + params).
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

from adapters.condense.base import create_condenser, derive_seed, fingerprint
from harness.data.images import LabeledImages
from harness.engine.protocol import create_protocol
from harness.errors import ConfigError
from harness.evaluate import evaluate
from harness.io import atomic_write_bytes, atomic_write_json
from harness.pruning.goldfromores import (
    LossRun,
    authors_scores,
    check_released,
    drop_per_class,
    file_scores,
    keep_to_drop_ratio,
    record_loss_run,
    split_name,
)
from harness.pruning.scores import compute_score
from harness.registry import Registry, near_matches

ScoreFn = Callable[[LabeledImages, dict[str, Any], int, torch.device], np.ndarray]
CRITERIA: Registry[ScoreFn] = Registry("GoldFromOres criterion")
ORDERS = ("large", "small")
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {}
SCORE_VERSION = 2  # bump when a criterion's definition changes (old cached scores are then not reused)
select_drops = drop_per_class  # (scores, labels, num_classes, drop_ratio, order) -> dropped indices


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
    scores: str | None = None  # None: compute; "authors": the released file; else a .json/.npy path (our order)
    data_root: str | None = None  # where "authors" looks (<data_root>/goldfromores/); default $DDBENCH_DATA

    def __post_init__(self) -> None:
        parse_criterion(self.criterion)
        if self.scores is not None:
            if not isinstance(self.scores, str) or not self.scores:
                raise ConfigError(f"scores {self.scores!r}: expected 'authors' or a .json/.npy file")
            if self.indicator == "Random":
                raise ConfigError("the Random criterion takes no scores (give a criterion such as LossConverge_large)")
            if self.params:
                raise ConfigError(f"params {sorted(self.params)} configure our own scoring, which scores="
                                  f"{self.scores!r} replaces; give one or the other")
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
        return float(self.drop_ratio) if self.drop_ratio is not None else keep_to_drop_ratio(self.keep_ratio)

    @property
    def indicator(self) -> str:
        return parse_criterion(self.criterion)[0]

    @property
    def order(self) -> str:
        return parse_criterion(self.criterion)[1]

    def resolved_params(self) -> dict[str, Any]:
        return {**DEFAULT_PARAMS[self.indicator], **self.params}

    def resolve_scores(self, data: LabeledImages) -> tuple[np.ndarray, dict[str, Any]]:
        """Given scores (``"authors"`` or a file), read and checked against ``data`` (:func:`resolve_scores`)."""
        return resolve_scores(data, self)

    def drop(self, data: LabeledImages, *, scores: np.ndarray | None = None, scores_info: dict[str, Any] | None = None,
             cache_dir: str | Path | None = None, device: str | torch.device = "cpu"
             ) -> tuple[LabeledImages, torch.Tensor, dict[str, Any]]:
        """:func:`drop_samples` with this spec."""
        return drop_samples(data, self, scores=scores, scores_info=scores_info, cache_dir=cache_dir, device=device)

    def as_dict(self) -> dict[str, Any]:
        d = {**asdict(self), "drop_fraction": self.drop_fraction}
        d.pop("data_root")  # where the files are is not what was done; the provenance records file + md5
        d["params"] = self.resolved_params() if self.scores is None else {}
        return d


# --- selection -----------------------------------------------------------------------------------
def resolve_scores(data: LabeledImages, spec: PrePrune, *, cache_dir: str | Path | None = None,
                   device: str | torch.device = "cpu") -> tuple[np.ndarray, dict[str, Any]]:
    """Index-aligned scores for ``data`` (a whole training split for ``scores="authors"``) and their provenance."""
    ind = spec.indicator
    if spec.scores is None:
        s = compute_scores(data, spec, cache_dir=cache_dir, device=device)
        info = {"source": "computed", "criterion": ind, "params": spec.resolved_params(), "seed": spec.seed,
                "definition": ((CRITERIA.get(ind).__doc__ or "").strip().splitlines() or [""])[0]}
        return s, info
    if spec.scores == "authors":
        dataset, split = split_name(data.name)
        check_released(dataset, ind)
        if split != "train":
            raise ConfigError(f"--drop-scores authors: the released scores are for the train split, not {data.name!r}")
        return authors_scores(dataset, ind, data.labels, spec.data_root)
    return file_scores(spec.scores, len(data))


def drop_samples(real: LabeledImages, spec: PrePrune, *, scores: np.ndarray | None = None,
                 scores_info: dict[str, Any] | None = None, cache_dir: str | Path | None = None,
                 device: str | torch.device = "cpu") -> tuple[LabeledImages, torch.Tensor, dict[str, Any]]:
    """Apply ``spec`` to ``real``: (kept data, kept indices into ``real``, a summary for provenance).

    ``scores`` (index-aligned with ``real``) skips :func:`resolve_scores`; ``scores_info`` then says what they are.
    """
    if scores is None:
        scores, scores_info = resolve_scores(real, spec, cache_dir=cache_dir, device=device)
    dropped = drop_per_class(scores, real.labels, real.num_classes, spec.drop_fraction, spec.order)
    keep = np.ones(len(real), dtype=bool)
    keep[dropped] = False
    kept = torch.from_numpy(np.nonzero(keep)[0])
    info = {"criterion": spec.criterion, "drop_fraction": spec.drop_fraction, "n_before": len(real),
            "n_after": int(kept.numel()), "dropped_per_class": np.bincount(
                real.labels.cpu().numpy()[dropped], minlength=real.num_classes).tolist(),
            "scores": dict(scores_info or {"source": "given by the caller"})}
    return real.subset(kept.to(real.images.device)), kept, info


# --- scores and their cache ----------------------------------------------------------------------
def score_key(data: LabeledImages, indicator: str, params: dict[str, Any], seed: int) -> str:
    blob = {"dataset": data.name, "data": fingerprint(data), "criterion": indicator, "params": params, "seed": seed,
            "version": SCORE_VERSION}
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


def _loss_run(params: dict[str, Any]) -> LossRun:
    return LossRun(epochs=int(params["epochs"]), model=params["model"], model_kwargs=dict(params["model_kwargs"]),
                   batch_size=int(params["batch_size"]), lr=float(params["lr"]))


_LOSS_DEFAULTS = {"model": "convnet", "model_kwargs": {}, "batch_size": 256, "lr": 0.01}


@register_criterion("LossInit", epochs=2, **_LOSS_DEFAULTS)
def loss_init(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device) -> np.ndarray:
    """Mean training-time cross-entropy over the first ``epochs`` epochs (scores.loss_init on a seeded run)."""
    res = record_loss_run(data, _loss_run(params), seed=seed, device=device, evaluate=False)
    return compute_score("loss_init", res.dynamics, epochs=int(params["epochs"]))


@register_criterion("LossConverge", epochs=10, **_LOSS_DEFAULTS)
def loss_converge(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device) -> np.ndarray:
    """Eval-mode cross-entropy after ``epochs`` epochs of training (scores.loss_converge on a seeded run)."""
    res = record_loss_run(data, _loss_run(params), seed=seed, device=device)
    return compute_score("loss_converge", res.final)


@register_criterion("MonteCarlo", trials=20, subset_fraction=0.1, method="dm", ipc=1, iterations=20,
                    eval_epochs=50, eval_size=2000, model="convnet", model_kwargs={})
def monte_carlo(data: LabeledImages, params: dict[str, Any], seed: int, device: torch.device) -> np.ndarray:
    """u(x) = mean accuracy of condensation runs on random per-class subsets (budget ``subset_fraction``)
    that contain x; accuracy measured on up to ``eval_size`` real images outside the subset."""
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
        proto = create_protocol("vico-dc", data.name.split(":")[0]).with_(epochs=int(params["eval_epochs"]),
                                                                       model=params["model"])
        res = evaluate(cs.decoded().to_labeled(), data.subset(rest_idx), proto, runs=1,
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
