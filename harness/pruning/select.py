"""Selection rules: pure, seeded functions ``(scores, labels, budget, *, seed, **opts) -> kept indices``.

Kept indices are returned sorted (int64). ``direction`` says how to read a score (``high_hard`` or
``low_hard``, see :mod:`harness.pruning.scores`). The same seed always gives the same selection.

Rules (registry :data:`RULES`): ``random``, ``rank`` (keep the easy or the hard end, balanced per
class or global; ``keep_easy``/``keep_hard`` are shorthands), ``stratified`` (CCS), ``beta`` (DUAL)
and ``kmeans`` (YOCO's SSP prototypes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.errors import ConfigError
from harness.io import atomic_save_npy
from harness.registry import Registry

_EPS = 1e-9


@dataclass(frozen=True)
class Budget:
    """How much to keep. Build with :meth:`keep_fraction`, :meth:`prune_rate`, :meth:`count` or :meth:`ipc`.

    - ``keep_fraction f``: keep floor(f*N) (balanced: floor(f*n_c) per class);
    - ``prune_rate r``: drop floor(r*N), keep the rest (TDDS convention; balanced: per class);
    - ``count k``: keep k (balanced: k split evenly, remainder to the lowest class ids with room);
    - ``ipc k``: k per class (imbalanced rules keep k * num_classes in total).
    """

    kind: str
    value: float

    def __post_init__(self) -> None:
        k, v = self.kind, self.value
        if k == "keep_fraction" and not 0 < v <= 1:
            raise ConfigError(f"keep fraction {v} must be in (0, 1]")
        elif k == "prune_rate" and not 0 <= v < 1:
            raise ConfigError(f"prune rate {v} must be in [0, 1)")
        elif k in ("count", "ipc"):
            if isinstance(v, bool) or v != int(v) or v < 1:
                raise ConfigError(f"{k} {v} must be a positive integer")
            object.__setattr__(self, "value", int(v))
        elif k not in ("keep_fraction", "prune_rate", "count", "ipc"):
            raise ConfigError(f"unknown budget kind {k!r} (keep_fraction, prune_rate, count, ipc)")

    @classmethod
    def keep_fraction(cls, f: float) -> Budget:
        return cls("keep_fraction", float(f))

    @classmethod
    def prune_rate(cls, r: float) -> Budget:
        return cls("prune_rate", float(r))

    @classmethod
    def count(cls, k: int) -> Budget:
        return cls("count", k)

    @classmethod
    def ipc(cls, k: int) -> Budget:
        return cls("ipc", k)

    def __str__(self) -> str:
        return {"keep_fraction": f"keep {self.value:g}", "prune_rate": f"prune {self.value:g}",
                "count": f"keep {int(self.value)}", "ipc": f"{int(self.value)} per class"}[self.kind]

    def _of(self, n: int) -> int:
        if self.kind == "keep_fraction":
            return int(math.floor(self.value * n + _EPS))
        if self.kind == "prune_rate":
            return n - int(math.floor(self.value * n + _EPS))
        return int(self.value)

    def total(self, n: int, num_classes: int = 1) -> int:
        """Number kept from ``n`` samples when selecting globally."""
        k = int(self.value) * num_classes if self.kind == "ipc" else self._of(n)
        if not 1 <= k <= n:
            raise ConfigError(f"budget {self} keeps {k} of {n} samples; need 1..{n}")
        return k

    def per_class(self, class_counts: np.ndarray) -> np.ndarray:
        """Number kept from each class when selecting per class (balanced)."""
        counts = np.asarray(class_counts, dtype=np.int64)
        if self.kind == "ipc":
            out = np.full_like(counts, int(self.value))
        elif self.kind == "count":
            k = int(self.value)
            if k > counts.sum():
                raise ConfigError(f"budget {self} exceeds the {counts.sum()} samples")
            out = np.zeros_like(counts)
            left, room = k, counts.copy()
            while left > 0:  # even split; leftover goes to classes with room, lowest id first
                open_ = np.flatnonzero(room > 0)
                share = max(left // len(open_), 1)
                for c in open_:
                    take = min(share, room[c], left)
                    out[c] += take
                    room[c] -= take
                    left -= take
                    if left == 0:
                        break
        else:
            out = np.array([self._of(int(c)) for c in counts], dtype=np.int64)
        short = np.flatnonzero(out > counts)
        if short.size:
            c = int(short[0])
            raise ConfigError(f"budget {self}: class {c} has {counts[c]} samples, {out[c]} requested")
        if out.sum() < 1:
            raise ConfigError(f"budget {self} keeps nothing")
        return out


# --- helpers ----------------------------------------------------------------------------------------
def _check(scores: np.ndarray | None, labels: np.ndarray, num_classes: int | None = None
           ) -> tuple[np.ndarray | None, np.ndarray, int]:
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if labels.size == 0:
        raise ConfigError("no samples to select from")
    if labels.min() < 0:
        raise ConfigError("labels must be >= 0")
    num_classes = int(num_classes or labels.max() + 1)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1 or scores.shape[0] != labels.shape[0]:
            raise ConfigError(f"scores of shape {scores.shape} do not match {labels.shape[0]} labels "
                              "(scores must be index-aligned with the dataset)")
        if not np.isfinite(scores).all():
            raise ConfigError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    return scores, labels, num_classes


def hardness(scores: np.ndarray, direction: str) -> np.ndarray:
    if direction == "high_hard":
        return np.asarray(scores, np.float64)
    if direction == "low_hard":
        return -np.asarray(scores, np.float64)
    raise ConfigError(f"direction {direction!r}, expected 'high_hard' or 'low_hard'")


def _top(values: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` entries of ``idx`` with the largest ``values`` (ties: lower index first)."""
    order = np.lexsort((idx, -values))
    return idx[order[:k]]


RULES: Registry[Callable[..., np.ndarray]] = Registry("selection rule")


def register_rule(name: str):
    return RULES.register(name)


def list_rules() -> list[str]:
    return RULES.names()


def select(rule: str, scores, labels, budget: Budget, *, seed: int, **opts) -> np.ndarray:
    return RULES.get(rule)(scores, labels, budget, seed=seed, **opts)


# --- rules ------------------------------------------------------------------------------------------
@register_rule("random")
def random(scores, labels, budget: Budget, *, seed: int, balance: bool = False,
           num_classes: int | None = None) -> np.ndarray:
    """Uniform random subset (``balance``: per class). ``scores`` is ignored (may be None)."""
    _, labels, nc = _check(None, labels, num_classes)
    rng = np.random.default_rng(seed)
    if not balance:
        k = budget.total(labels.size, nc)
        return np.sort(rng.choice(labels.size, size=k, replace=False)).astype(np.int64)
    counts = np.bincount(labels, minlength=nc)
    per = budget.per_class(counts)
    out = [rng.choice(np.flatnonzero(labels == c), size=int(per[c]), replace=False) for c in range(nc) if per[c]]
    return np.sort(np.concatenate(out)).astype(np.int64)


@register_rule("rank")
def rank(scores, labels, budget: Budget, *, seed: int, keep: str = "hard", direction: str = "high_hard",
         balance: bool = False, num_classes: int | None = None) -> np.ndarray:
    """Keep the ``keep="hard"`` or ``"easy"`` end of the scores, globally or per class (``balance``).

    Deterministic (ties: lower index first); ``seed`` is accepted for a uniform signature.
    """
    scores, labels, nc = _check(scores, labels, num_classes)
    if keep not in ("hard", "easy"):
        raise ConfigError(f"keep={keep!r}, expected 'hard' or 'easy'")
    h = hardness(scores, direction)
    v = h if keep == "hard" else -h
    if not balance:
        return np.sort(_top(v, np.arange(labels.size), budget.total(labels.size, nc))).astype(np.int64)
    per = budget.per_class(np.bincount(labels, minlength=nc))
    out = []
    for c in range(nc):
        idx = np.flatnonzero(labels == c)
        out.append(_top(v[idx], idx, int(per[c])))
    return np.sort(np.concatenate(out)).astype(np.int64)


@register_rule("keep_hard")
def keep_hard(scores, labels, budget: Budget, *, seed: int, direction: str = "high_hard", balance: bool = False,
              num_classes: int | None = None) -> np.ndarray:
    return rank(scores, labels, budget, seed=seed, keep="hard", direction=direction, balance=balance,
                num_classes=num_classes)


@register_rule("keep_easy")
def keep_easy(scores, labels, budget: Budget, *, seed: int, direction: str = "high_hard", balance: bool = False,
              num_classes: int | None = None) -> np.ndarray:
    return rank(scores, labels, budget, seed=seed, keep="easy", direction=direction, balance=balance,
                num_classes=num_classes)


def strata_edges(scores: np.ndarray, strata: int = 50) -> np.ndarray:
    """CCS strata: ``strata`` bins of equal width over [min, 1.0001*max].

    CCS/YOCO ``Coreset.stratified_sampling`` (YOCO ``ccs/core/data/Coreset.py`` 71-76): ``step = (1.0001*max -
    min) / stratas``, bin k = [min + k*step, min + (k+1)*step); the edges here are computed the same way.
    For a non-positive max, 1.0001*max would fall below max (CCS would drop the top sample); we use
    max + 0.0001*|max| there. All-equal scores form one bin.
    """
    lo, hi = float(scores.min()), float(scores.max())
    hi = hi * 1.0001 if hi > 0 else (hi + 1e-4 * abs(hi) if hi != 0 else 1e-4 * max(abs(lo), 1.0))
    if hi <= lo:
        hi = lo + 1e-4 * max(abs(lo), 1.0)
    step = (hi - lo) / strata
    return lo + step * np.arange(strata + 1)


def stratum_of(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per sample (CCS ``score >= start and score < end``)."""
    b = np.searchsorted(edges, scores, side="right") - 1
    return np.clip(b, 0, len(edges) - 2)


TIE_ORDERS = ("torch", "stable")


def _ascending(sizes: np.ndarray, ties: str) -> np.ndarray:
    """Strata in ascending population. ``ties="torch"``: equal populations in the order ``torch.argsort``
    (not stable) gives them, as CCS/YOCO's ``bin_allocate`` calls it on the int64 populations; ``"stable"``:
    lower stratum first."""
    if ties == "stable":
        return np.argsort(sizes, kind="stable")
    if ties == "torch":
        import torch

        return torch.argsort(torch.as_tensor(np.asarray(sizes, dtype=np.int64))).numpy()
    raise ConfigError(f"ties={ties!r}, expected one of {TIE_ORDERS}")


def bin_allocate(budget: int, sizes: np.ndarray, ties: str = "torch") -> np.ndarray:
    """CCS ``bin_allocate``: strata in ascending population; each takes min(size, remaining // strata left).

    CCS ``core/data/Coreset.py`` 75-94, YOCO ``ccs/core/data/Coreset.py`` 89-112. Among strata of equal
    population the order decides which get the larger share when the budget binds; the authors sort with
    ``torch.argsort(bins)``, which is not stable for more than 16 strata (``ties="torch"`` reproduces
    it with the installed torch; ``ties="stable"``: lower stratum first).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    order = _ascending(sizes, ties)
    out = np.zeros_like(sizes)
    rest = int(budget)
    for i, s in enumerate(order):
        take = min(int(sizes[s]), rest // (len(sizes) - i))
        out[s] = take
        rest -= take
    return out


WITHIN = ("random", "hard_first")


def _stratified_one(pool: np.ndarray, scores: np.ndarray, k: int, strata: int, within: str, ties: str,
                    rng: np.random.Generator, where: str) -> np.ndarray:
    """Steps 2-4 of :func:`stratified` on ``pool`` (the samples left after the cut-off, in the order
    ``within`` reads them: index order for ``random``, hard-first for ``hard_first``)."""
    if k > pool.size:
        raise ConfigError(f"budget keeps {k}{where} but only {pool.size} samples remain after the cut-off")
    if k == 0:
        return pool[:0]
    edges = strata_edges(scores[pool], strata)
    bins = stratum_of(scores[pool], edges)
    alloc = bin_allocate(k, np.bincount(bins, minlength=strata), ties)
    out = []
    for b in range(strata):
        if alloc[b]:
            members = pool[bins == b]
            out.append(rng.permutation(members)[: alloc[b]] if within == "random" else members[: alloc[b]])
    return np.concatenate(out)


@register_rule("stratified")
def stratified(scores, labels, budget: Budget, *, seed: int, direction: str = "high_hard", strata: int = 50,
               cutoff_ratio: float = 0.0, cutoff_scores=None, cutoff_direction: str | None = None,
               within: str = "random", cutoff_scope: str = "class", ties: str = "torch", balance: bool = False,
               num_classes: int | None = None) -> np.ndarray:
    """CCS coverage-centric selection (Zheng et al., ICLR 2023) and YOCO's variant of it.

    Let ``h`` be the hardness of ``cutoff_scores`` (default: ``scores``) read with ``cutoff_direction``
    (default: ``direction``), and order the samples hard-first (h descending; ties: lower index first).

    1. Hard cut-off: drop the first int(cutoff_ratio * N) samples of that order (CCS: AUM, low = hard;
       YOCO: the strata key itself, EL2N high = hard; ``mislabel_mask``, YOCO ``utils/img_loader.py`` 540-552).
    2. ``strata`` bins of equal width over [min, 1.0001*max] of the remaining ``scores`` (:func:`strata_edges`).
    3. Budget (of all N, CCS/YOCO ``int(ratio*N)``) split by :func:`bin_allocate` (``ties``: equal-population
       strata in ``torch.argsort`` order, as the authors, or ``"stable"``).
    4. Inside each stratum: uniform random (``within="random"``, CCS; YOCO's ``--strata_fixed_select``) or
       the first k in the hard-first order (``"hard_first"``, YOCO's default): YOCO re-orders the score
       array by the cut-off sort (``mislabel_mask(inplace=True)``, descending EL2N; ascending for
       ``accumulated_margin``) and takes ``pool[:budget]`` of each stratum in that order
       (``Coreset.py`` 121-130), i.e. the k *hardest* members of the stratum, whatever their class.

    ``balance``: steps 2-4 inside each class with the class's share of the budget
    (:meth:`Budget.per_class`). The cut-off is made per class, int(cutoff_ratio * n_c) each
    (``cutoff_scope="class"``), or once over the whole set before the split (``"global"``, YOCO's
    balanced branch, ``utils/img_loader.py`` 555-594; a class the cut empties below its budget is an error,
    where YOCO crashes).
    """
    scores, labels, nc = _check(scores, labels, num_classes)
    n = labels.size
    if not 0 <= cutoff_ratio < 1:
        raise ConfigError(f"cutoff_ratio {cutoff_ratio} must be in [0, 1)")
    if within not in WITHIN:
        raise ConfigError(f"within={within!r}, expected one of {WITHIN} (YOCO's first-k is 'hard_first')")
    if cutoff_scope not in ("class", "global"):
        raise ConfigError(f"cutoff_scope={cutoff_scope!r}, expected 'class' or 'global'")
    if ties not in TIE_ORDERS:
        raise ConfigError(f"ties={ties!r}, expected one of {TIE_ORDERS}")
    cs = scores if cutoff_scores is None else _check(cutoff_scores, labels, nc)[0]
    h = hardness(cs, cutoff_direction or direction)
    order = np.lexsort((np.arange(n), -h))  # hard first; ties: lower index first

    def pool_of(rest: np.ndarray) -> np.ndarray:
        return rest if within == "hard_first" else np.sort(rest)

    rng = np.random.default_rng(seed)
    if not balance or cutoff_scope == "global":
        rest = order[int(cutoff_ratio * n):]
    if not balance:
        out = _stratified_one(pool_of(rest), scores, budget.total(n, nc), strata, within, ties, rng,
                              f" ({budget})")
        return np.sort(out).astype(np.int64)
    per = budget.per_class(np.bincount(labels, minlength=nc))
    out = []
    for c in range(nc):
        if cutoff_scope == "global":
            mine = rest[labels[rest] == c]
        else:
            mine = order[labels[order] == c]
            mine = mine[int(cutoff_ratio * mine.size):]
        out.append(_stratified_one(pool_of(mine), scores, int(per[c]), strata, within, ties, rng,
                                   f" in class {c} ({budget})"))
    return np.sort(np.concatenate(out)).astype(np.int64)


def _log_beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    x = np.clip(x, 1e-6, 1 - 1e-6)
    lbeta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return (a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - lbeta


def beta_weights(scores: np.ndarray, mu: np.ndarray, prune_rate: float, c_d: float = 4.0, top: int = 10
                 ) -> tuple[np.ndarray, dict[str, float]]:
    """DUAL Beta-sampling probabilities: P_i ∝ BetaPDF(mu_i; alpha, beta) * score_i.

    anchor = mean mu over the ``top`` highest scores; beta = 15 (1 - anchor)(1 - r^c_d); alpha = 16 - beta.
    mu is clipped to [1e-6, 1 - 1e-6] before the pdf (the pdf is infinite at the ends when beta < 1).
    """
    scores = np.asarray(scores, np.float64)
    mu = np.asarray(mu, np.float64)
    if mu.shape != scores.shape:
        raise ConfigError(f"mu has shape {mu.shape}, scores {scores.shape}")
    if (scores < 0).any():
        raise ConfigError("beta sampling needs non-negative scores (DUAL scores are >= 0)")
    top_idx = np.argsort(scores, kind="stable")[-top:]
    anchor = float(mu[top_idx].mean())
    b = 15.0 * (1.0 - anchor) * (1.0 - prune_rate ** c_d)
    a = 16.0 - b
    if b <= 0:
        raise ConfigError(f"beta sampling: beta = {b:g} <= 0 (anchor {anchor:g}, prune rate {prune_rate:g})")
    logp = _log_beta_pdf(mu, a, b)
    w = np.exp(logp - logp.max()) * scores
    total = w.sum()
    if not total > 0:
        raise ConfigError("beta sampling: all weights are zero")
    return w / total, {"anchor": anchor, "alpha": a, "beta": b}


@register_rule("beta")
def beta(scores, labels, budget: Budget, *, seed: int, mu=None, c_d: float = 4.0, top: int = 10,
         num_classes: int | None = None) -> np.ndarray:
    """DUAL Beta sampling: draw (1 - r) N samples without replacement with P ∝ BetaPDF(mu; alpha, beta) * DUAL.

    ``mu``: mean target probability over the first 30 epochs (``scores.mean_target_prob``);
    r = 1 - kept / N is the pruning rate the budget implies.
    """
    scores, labels, nc = _check(scores, labels, num_classes)
    if mu is None:
        raise ConfigError("beta sampling needs mu (mean target probability over the first 30 epochs)")
    n = labels.size
    k = budget.total(n, nc)
    r = 1.0 - k / n
    p, _ = beta_weights(scores, mu, r, c_d, top)
    nz = int((p > 0).sum())
    if nz < k:
        raise ConfigError(f"beta sampling: only {nz} samples have non-zero weight, {k} requested")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False, p=p)).astype(np.int64)


def _prototypes(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Row indices of the samples nearest each of ``k`` k-means centroids (distinct; greedy in centroid order)."""
    from sklearn.cluster import KMeans

    if k >= x.shape[0]:
        return np.arange(x.shape[0])
    km = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(x)
    d = ((x[None, :, :] - km.cluster_centers_[:, None, :]) ** 2).sum(-1) if x.shape[0] * k < 5e7 else None
    taken = np.zeros(x.shape[0], bool)
    out = []
    for c in range(k):
        dc = d[c] if d is not None else ((x - km.cluster_centers_[c]) ** 2).sum(1)
        dc = np.where(taken, np.inf, dc)
        i = int(np.argmin(dc))
        taken[i] = True
        out.append(i)
    return np.asarray(out, dtype=np.int64)


@register_rule("kmeans")
def kmeans(scores, labels, budget: Budget, *, seed: int, features=None, balance: bool = False,
           num_classes: int | None = None) -> np.ndarray:
    """YOCO's SSP: k-means (sklearn, ``random_state=seed``) on ``features``, keep the sample nearest each
    centroid; per class with that class's budget (``balance``, ``kmeans_{IPC}``) or one global k-means
    (``imbalance_kmeans_{IPC}``, YOCO's default)."""
    _, labels, nc = _check(None, labels, num_classes)
    if features is None:
        raise ConfigError("k-means selection needs features (N, D), e.g. the trained model's embeddings")
    x = np.asarray(features, dtype=np.float64).reshape(labels.size, -1) if np.ndim(features) > 1 else None
    if x is None or x.shape[0] != labels.size:
        raise ConfigError(f"features of shape {np.shape(features)} do not match {labels.size} labels")
    if not balance:
        return np.sort(_prototypes(x, budget.total(labels.size, nc), seed))
    per = budget.per_class(np.bincount(labels, minlength=nc))
    out = []
    for c in range(nc):
        idx = np.flatnonzero(labels == c)
        if per[c]:
            out.append(idx[_prototypes(x[idx], int(per[c]), seed)])
    return np.sort(np.concatenate(out)).astype(np.int64)


def save_kept(path, kept: np.ndarray):
    """Save kept indices (sorted int64) atomically."""

    arr = np.asarray(kept)
    if arr.ndim != 1 or (arr.size and (arr.min() < 0 or not np.issubdtype(arr.dtype, np.integer))):
        raise ConfigError(f"kept indices must be 1-D non-negative integers, got {arr.dtype} {arr.shape}")
    return atomic_save_npy(path, np.sort(arr).astype(np.int64))
