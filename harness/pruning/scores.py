"""Pruning scores: pure functions ``(dyn: Dynamics, **params) -> float64 (N,)``, index-aligned.

Every score reads the epoch rows it needs one at a time from :class:`harness.dynamics.Dynamics`
(memmapped on disk), so memory stays at a few ``(N,)`` rows (a window of rows for TDDS / DUAL)
whatever the number of epochs. Each score declares its ``direction``:

- ``high_hard``: a larger score means a harder (less typical, more informative) sample;
- ``low_hard``: a smaller score means harder (AUM: low margin = hard / likely mislabelled).

Formulas and reference-code behaviours are from ``shared/reference/pruning-scores.md``.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.dynamics import Dynamics
from harness.errors import ConfigError, FormatError
from harness.registry import Registry

DIRECTIONS = ("high_hard", "low_hard")


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    fn: Callable[..., np.ndarray]
    direction: str
    paper: str
    doc: str

    def __call__(self, dyn, **params) -> np.ndarray:
        return compute_score(self.name, dyn, **params)

    def params(self) -> dict[str, object]:
        sig = inspect.signature(self.fn)
        return {k: p.default for k, p in list(sig.parameters.items())[1:] if p.kind == p.KEYWORD_ONLY}


SCORES: Registry[ScoreSpec] = Registry("score")


def register_score(name: str, *, direction: str, paper: str):
    if direction not in DIRECTIONS:
        raise ValueError(f"score {name}: direction {direction!r} not in {DIRECTIONS}")

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        fn.direction = direction  # type: ignore[attr-defined]
        SCORES.register(name, ScoreSpec(name, fn, direction, paper, inspect.getdoc(fn) or ""))
        return fn

    return deco


def list_scores(pattern: str = "*") -> list[str]:
    return SCORES.names(pattern)


def get_score(name: str) -> ScoreSpec:
    return SCORES.get(name)


def create_score(name: str, **params) -> Callable[[Dynamics], np.ndarray]:
    """A one-argument callable ``dyn -> scores`` with ``params`` bound (checked now)."""
    spec = get_score(name)
    _check_params(spec, params)
    return lambda dyn: compute_score(name, dyn, **params)


def _check_params(spec: ScoreSpec, params: dict) -> None:
    known = spec.params()
    bad = sorted(set(params) - set(known))
    if bad:
        raise ConfigError(f"score {spec.name!r}: unknown parameters {bad} (known: {known})")


def compute_score(name: str, dyn, **params) -> np.ndarray:
    spec = get_score(name)
    _check_params(spec, params)
    out = np.asarray(spec.fn(dyn, **params), dtype=np.float64)
    first = dyn[0] if isinstance(dyn, (list, tuple)) else dyn
    if out.shape != (first.n,):
        raise AssertionError(f"score {name} returned shape {out.shape}, expected ({first.n},)")
    return out


# --- streaming helpers ----------------------------------------------------------------------------
def _window(dyn: Dynamics, start: int, end: int | None, what: str) -> tuple[int, int]:
    e = dyn.epochs
    end = e if end is None else int(end)
    start = int(start) if start >= 0 else e + int(start)
    if end < 0:
        end = e + end
    if not 0 <= start < end <= e:
        raise ConfigError(f"{what}: epoch window [{start}, {end}) is not inside the {e} recorded epochs")
    return start, end


def _rows(dyn: Dynamics, stat: str, start: int = 0, end: int | None = None) -> Iterator[np.ndarray]:
    arr = dyn.stat(stat)
    end = dyn.epochs if end is None else end
    for t in range(start, end):
        yield np.asarray(arr[t], dtype=np.float64)


def _runs(dyn) -> list[Dynamics]:
    runs = list(dyn) if isinstance(dyn, (list, tuple)) else [dyn]
    if not runs:
        raise ConfigError("no dynamics given")
    n = runs[0].n
    for r in runs[1:]:
        if r.n != n or not np.array_equal(r.labels, runs[0].labels):
            raise ConfigError(f"dynamics runs disagree on N or labels ({r.n} vs {n})")
    return runs


def _one(dyn) -> Dynamics:
    if isinstance(dyn, (list, tuple)):
        if len(dyn) != 1:
            raise ConfigError("this score takes one dynamics run")
        return dyn[0]
    return dyn


# --- scores ---------------------------------------------------------------------------------------
@register_score("forgetting", direction="high_hard", paper="Toneva et al., ICLR 2019; CCS (Zheng et al., ICLR 2023)")
def forgetting(dyn, *, never_learned: str = "zero", start: int = 0, end: int | None = None) -> np.ndarray:
    """Forgetting events: sum_t 1[correct_{t-1} = 1 and correct_t = 0] over epochs [start, end).

    ``correct_{-1}`` is 0 (CCS/YOCO ``last_correct`` starts at 0). Samples never classified correctly
    in the window get 0 events with ``never_learned="zero"`` (CCS/YOCO/DUAL) or, with ``"max"``
    (Toneva et al., who rank them as the most forgotten), the window length, more than any sample
    can reach. High = hard.
    """
    dyn = _one(dyn)
    if never_learned not in ("zero", "max"):
        raise ConfigError(f"forgetting: never_learned={never_learned!r}, expected 'zero' or 'max'")
    start, end = _window(dyn, start, end, "forgetting")
    events = np.zeros(dyn.n)
    ever = np.zeros(dyn.n, bool)
    last = np.zeros(dyn.n, bool)
    for row in _rows(dyn, "correct", start, end):
        c = row > 0.5
        events += last & ~c
        ever |= c
        last = c
    if never_learned == "max":
        events[~ever] = end - start
    return events


@register_score("el2n", direction="high_hard", paper="Paul et al., NeurIPS 2021; CCS generate_importance_score.EL2N")
def el2n(dyn, *, start: int = 0, end: int | None = 10, reduce: str = "sum") -> np.ndarray:
    """EL2N: sum (``reduce="sum"``, CCS/YOCO) or mean over epochs [start, end) of ||softmax(z) - onehot(y)||_2.

    CCS/YOCO: epochs 0..9 of one training run (default); DUAL: the single epoch 20 (``start=20, end=21``);
    Paul et al.: one epoch averaged over several models -- pass a list of Dynamics runs and the
    per-run scores are averaged. ``end`` is clipped to the recorded epochs. High = hard.
    """
    if reduce not in ("sum", "mean"):
        raise ConfigError(f"el2n: reduce={reduce!r}, expected 'sum' or 'mean'")
    out = []
    for run in _runs(dyn):
        e = None if end is None else min(int(end), run.epochs)
        s, e = _window(run, start, e, "el2n")
        acc = np.zeros(run.n)
        for row in _rows(run, "el2n", s, e):
            acc += row
        out.append(acc / (e - s) if reduce == "mean" else acc)
    return np.mean(out, axis=0)


@register_score("aum", direction="low_hard", paper="Pleiss et al., NeurIPS 2020; CCS accumulated_margin")
def aum(dyn, *, margin: str = "prob", reduce: str = "sum", start: int = 0, end: int | None = None) -> np.ndarray:
    """Area under the margin over epochs [start, end).

    ``margin="prob"``, ``reduce="sum"`` (default): CCS/YOCO ``accumulated_margin`` = sum over all epochs of
    p_y - max_{k != y} p_k. ``margin="logit"``, ``reduce="mean"``: Pleiss et al.'s AUM (mean logit margin).
    DUAL's ``aum()`` re-initialises its accumulator inside the epoch loop so only the last epoch
    counts; we accumulate (that bug is ``start=-1``). Low = hard.
    """
    dyn = _one(dyn)
    if margin not in ("prob", "logit") or reduce not in ("sum", "mean"):
        raise ConfigError(f"aum: margin={margin!r} (prob|logit), reduce={reduce!r} (sum|mean)")
    s, e = _window(dyn, start, end, "aum")
    acc = np.zeros(dyn.n)
    for row in _rows(dyn, f"{margin}_margin", s, e):
        acc += row
    return acc / (e - s) if reduce == "mean" else acc


@register_score("entropy", direction="high_hard", paper="Coleman et al., ICLR 2020 (SVP); CCS/DUAL entropy")
def entropy(dyn, *, epoch: int = -1) -> np.ndarray:
    """Prediction entropy -sum_c p_c log(p_c + 1e-10) at one epoch (default the last), training-time outputs.

    This is DUAL's ``entropy()`` (last epoch's training-mode logits on augmented inputs). CCS/YOCO
    instead run the final checkpoint in eval mode on un-augmented inputs (CCS even without
    normalisation); that needs a forward pass, not dynamics. High = hard.
    """
    dyn = _one(dyn)
    s, _ = _window(dyn, epoch, (epoch + 1) if epoch >= 0 else (dyn.epochs + epoch + 1), "entropy")
    return np.asarray(dyn.stat("entropy")[s], dtype=np.float64)


@register_score("loss", direction="high_hard", paper="training loss (CCS data-score 'loss')")
def loss(dyn, *, start: int = -1, end: int | None = None) -> np.ndarray:
    """Mean cross-entropy loss over epochs [start, end) (default: the last epoch). High = hard."""
    dyn = _one(dyn)
    s, e = _window(dyn, start, end, "loss")
    acc = np.zeros(dyn.n)
    for row in _rows(dyn, "loss", s, e):
        acc += row
    return acc / (e - s)


@register_score("loss_init", direction="high_hard", paper="GoldFromOres (Xu et al., 2023): LossInit")
def loss_init(dyn, *, epochs: int = 10) -> np.ndarray:
    """GoldFromOres LossInit: mean training loss over the first ``epochs`` epochs. High = hard."""
    dyn = _one(dyn)
    return loss(dyn, start=0, end=min(int(epochs), dyn.epochs))


@register_score("loss_converge", direction="high_hard", paper="GoldFromOres (Xu et al., 2023): LossConverge")
def loss_converge(dyn, *, last: int = 1) -> np.ndarray:
    """GoldFromOres LossConverge: mean training loss over the last ``last`` epochs (default the final one)."""
    dyn = _one(dyn)
    if last < 1:
        raise ConfigError("loss_converge: last must be >= 1")
    return loss(dyn, start=-min(int(last), dyn.epochs), end=None)


def _topk_epochs(dyn: Dynamics, stop_epoch: int, k: int, by: str) -> list[int]:
    if by == "correct":
        key = [-float(np.nansum(r)) for r in _rows(dyn, "correct", 0, stop_epoch)]
    elif by == "loss":
        key = [float(np.nanmean(r)) for r in _rows(dyn, "loss", 0, stop_epoch)]
    else:
        raise ConfigError(f"lbpe: by={by!r}, expected 'correct' or 'loss'")
    order = np.argsort(np.asarray(key), kind="stable")  # ties: earlier epoch first
    return sorted(int(e) for e in order[:k])


@register_score("lbpe", direction="high_hard", paper="YOCO (He et al., NeurIPS 2023): LBPE_top{K}")
def lbpe(dyn, *, stop_epoch: int | None = None, k: int = 10, by: str = "correct") -> np.ndarray:
    """YOCO LBPE: sum over the K epochs e < stop_epoch with the most correctly classified training
    samples (``by="loss"``: lowest mean loss) of ||softmax(z_e) - onehot(y)||_2.

    ``stop_epoch=None`` means all recorded epochs (YOCO: IDC CIFAR-10 100, CIFAR-100 200, MTT 10 with K 3).
    Ties in the epoch ranking go to the earlier epoch. A list of runs averages the per-run scores
    (YOCO's paper averages three dynamics). High = hard; YOCO keeps the easy (low) end per class.
    """
    out = []
    for run in _runs(dyn):
        stop = run.epochs if stop_epoch is None else int(stop_epoch)
        if not 1 <= stop <= run.epochs or k < 1:
            raise ConfigError(f"lbpe: stop_epoch={stop_epoch}, k={k} with {run.epochs} recorded epochs")
        acc = np.zeros(run.n)
        arr = run.stat("el2n")
        for e in _topk_epochs(run, stop, min(int(k), stop), by):
            acc += np.asarray(arr[e], dtype=np.float64)
        out.append(acc)
    return np.mean(out, axis=0)


@register_score("tdds", direction="high_hard", paper="TDDS (Zhang et al., CVPR 2024)")
def tdds(dyn, *, T: int = 30, J: int = 10, beta: float = 0.9) -> np.ndarray:
    """TDDS: for windows k = 0..T-J over epochs [k, k+J-1], d_{k,j} = kl_prev at epoch k+j+1 (j = 0..J-2),
    i.e. sum_c |p_{k+j+1,c}(log p_{k+j+1,c} - log p_{k+j,c})|; s_k = ||d_k - mean_j d_k||_2 over the J-1
    values; score = sum_k beta (1-beta)^(T-J-k) s_k. Needs T recorded epochs.

    The official code slides the window (DUAL's re-implementation always uses epochs j, j+1 and feeds
    logits, not probabilities; not reproduced here). High = hard (TDDS keeps the highest).
    """
    dyn = _one(dyn)
    T, J = int(T), int(J)
    if J < 2 or T < J or T > dyn.epochs:
        raise ConfigError(f"tdds: need 2 <= J <= T <= epochs, got T={T}, J={J}, epochs={dyn.epochs}")
    if not 0 < beta <= 1:
        raise ConfigError(f"tdds: beta={beta} not in (0, 1]")
    win: deque[np.ndarray] = deque(maxlen=J - 1)
    score = np.zeros(dyn.n)
    for t, row in enumerate(_rows(dyn, "kl_prev", 1, T), start=1):
        win.append(row)
        k = t - (J - 1)
        if k >= 0:
            d = np.stack(win)
            s = np.sqrt(((d - d.mean(0)) ** 2).sum(0))
            score += beta * (1 - beta) ** (T - J - k) * s
    return score


def _window_unc(dyn: Dynamics, T: int, J: int, difficulty: bool) -> np.ndarray:
    win: deque[np.ndarray] = deque(maxlen=J)
    acc = np.zeros(dyn.n)
    count = 0
    for row in _rows(dyn, "target_prob", 0, T):
        win.append(row)
        if len(win) == J:
            w = np.stack(win)
            val = 10.0 * w.std(0, ddof=1)
            if difficulty:
                val *= 1.0 - w.mean(0)
            acc += val
            count += 1
    return acc / count


@register_score("dual", direction="high_hard", paper="DUAL (Cho et al., arXiv 2502.06905)")
def dual(dyn, *, T: int = 30, J: int = 10) -> np.ndarray:
    """DUAL = mean over windows k = 0..T-J of 10 * std_{t in [k, k+J)} p_{t,y} * (1 - mean_{t in [k, k+J)} p_{t,y}),
    std unbiased (ddof 1). Uncertainty x difficulty over the first T epochs (CIFAR T=30; ImageNet T=60).
    High = hard; DUAL's default selection is Beta sampling, not top-k.
    """
    dyn = _one(dyn)
    T, J = int(T), int(J)
    if J < 2 or T < J or T > dyn.epochs:
        raise ConfigError(f"dual: need 2 <= J <= T <= epochs, got T={T}, J={J}, epochs={dyn.epochs}")
    return _window_unc(dyn, T, J, True)


@register_score("dynunc", direction="high_hard", paper="Dyn-Unc (He et al., CVPR 2024) as in DUAL's code")
def dynunc(dyn, *, T: int | None = None, J: int = 10) -> np.ndarray:
    """Dyn-Unc: mean over windows of 10 * std_{t in [k, k+J)} p_{t,y} (DUAL without the (1 - mean) factor),
    over all recorded epochs by default (``T=None``). High = uncertain."""
    dyn = _one(dyn)
    T = dyn.epochs if T is None else int(T)
    J = int(J)
    if J < 2 or T < J or T > dyn.epochs:
        raise ConfigError(f"dynunc: need 2 <= J <= T <= epochs, got T={T}, J={J}, epochs={dyn.epochs}")
    return _window_unc(dyn, T, J, False)


def mean_target_prob(dyn, *, epochs: int = 30) -> np.ndarray:
    """mu_i = mean target probability over the first ``epochs`` epochs (DUAL's Beta-sampling prior input)."""
    dyn = _one(dyn)
    e = min(int(epochs), dyn.epochs)
    acc = np.zeros(dyn.n)
    for row in _rows(dyn, "target_prob", 0, e):
        acc += row
    return acc / e


# --- files ------------------------------------------------------------------------------------------
def save_scores(path: str | Path, scores: np.ndarray) -> Path:
    """Save a 1-D float64 score array, index-aligned with the dataset (never sorted), atomically."""
    from harness.io import atomic_save_npy

    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ConfigError(f"scores must be 1-D (index-aligned), got shape {arr.shape}")
    return atomic_save_npy(path, arr)


def load_scores(path: str | Path, n: int | None = None) -> np.ndarray:
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FormatError(f"{p}: cannot read scores ({e}); expected a 1-D .npy") from None
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        raise FormatError(f"{p}: scores of shape {arr.shape}, expected ({n if n is not None else 'N'},) "
                          "index-aligned with the dataset")
    return arr.astype(np.float64)


def compute_all(dyn: Dynamics, names: Sequence[str] | None = None, **per_score: dict) -> dict[str, np.ndarray]:
    """Several scores from one dynamics (each streamed separately); ``per_score[name]`` = params."""
    return {n: compute_score(n, dyn, **per_score.get(n, {})) for n in (names or list_scores())}
