"""Pruning scores: pure functions ``(dyn: Dynamics, **params) -> float64 (N,)``, index-aligned.

A score that needs the trained model itself rather than its training dynamics (GoldFromOres
LossConverge) declares ``needs="final_eval"`` and reads a :class:`FinalEval` (the final model's eval-mode
logits on its training set); :func:`compute_score` refuses the wrong kind of input with a clear message.

Every score reads the epoch rows it needs one at a time from :class:`harness.dynamics.Dynamics`
(memmapped on disk), so memory stays at a few ``(N,)`` rows (a window of rows for TDDS / DUAL)
whatever the number of epochs. Each score declares its ``direction``:

- ``high_hard``: a larger score means a harder (less typical, more informative) sample;
- ``low_hard``: a smaller score means harder (AUM: low margin = hard / likely mislabelled).

Each score also declares the epochs of a run it reads (:meth:`ScoreSpec.epochs_needed`): a run recorded only
that far (:func:`harness.dynamics.record_dynamics` ``until_epoch``) gives the same score as a full-length one.

Formulas and reference-code behaviours are from ``shared/reference/pruning-scores.md``.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.dynamics import Dynamics
from harness.engine.trainer import predict
from harness.errors import ConfigError, FormatError
from harness.io import atomic_save_npy
from harness.models import create_model
from harness.registry import Registry

DIRECTIONS = ("high_hard", "low_hard")
INPUTS = ("dynamics", "final_eval")  # what a score reads: training dynamics, or the final model's eval pass


@dataclass(frozen=True)
class FinalEval:
    """The final model's eval-mode outputs on its own training set (un-augmented), in dataset order.

    Training dynamics hold what the model saw *during* training (train-mode, augmented views, each
    sample at its own step); a score that needs the trained model itself (GoldFromOres LossConverge)
    reads this instead. Build it with :func:`final_eval` (a model and its training images) or
    :func:`final_eval_from_dynamics` (the final checkpoint of a recorded dynamics run).
    """

    logits: np.ndarray  # (N, C) float32
    labels: np.ndarray  # (N,) int64
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        z = np.asarray(self.logits, dtype=np.float32)
        y = np.asarray(self.labels, dtype=np.int64)
        if z.ndim != 2 or y.shape != (z.shape[0],):
            raise FormatError(f"final eval: logits {z.shape} and labels {y.shape}, expected (N, C) and (N,)")
        if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
            raise FormatError(f"final eval: labels outside [0, {z.shape[1]})")
        object.__setattr__(self, "logits", z)
        object.__setattr__(self, "labels", y)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.logits.shape[1])

    def loss(self) -> np.ndarray:
        """Per-sample cross-entropy ``logsumexp(z) - z_y`` (float64)."""
        z = self.logits.astype(np.float64)
        m = z.max(1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(1))
        return lse - z[np.arange(self.n), self.labels]


def final_eval(model, images, labels, *, batch: int = 1000, meta: Mapping[str, Any] | None = None) -> FinalEval:
    """Eval-mode logits of ``model`` on ``images`` (already in the model's input space) -> :class:`FinalEval`."""

    logits = predict(model, images, batch)
    y = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
    return FinalEval(logits.cpu().numpy(), y, dict(meta or {}))


def final_eval_from_dynamics(dyn: Dynamics, train, *, device: str = "cpu") -> FinalEval:
    """The eval pass of a finished on-disk dynamics run's final model (``checkpoint.pt``, the architecture
    named in its config) over ``train`` (the ``LabeledImages`` it was recorded on; labels are checked)."""
    import torch


    d = dyn.directory
    cfg = dict(dyn.meta.get("config") or {})
    ckpt = None if d is None else d / "checkpoint.pt"
    if ckpt is None or not ckpt.is_file() or not dyn.meta.get("finished") or "model" not in cfg:
        raise ConfigError(f"dynamics {d or '(in memory)'}: the final model's eval pass needs a finished on-disk run "
                          "with its checkpoint.pt and model name (harness.dynamics.record_dynamics with out_dir)")
    if len(train) != dyn.n or not np.array_equal(train.labels.cpu().numpy(), dyn.labels):
        raise ConfigError(f"dynamics {d}: recorded on {dyn.n} samples with other labels than the {len(train)} given")
    net = create_model(cfg["model"], num_classes=train.num_classes, in_chans=train.channels,
                       img_size=train.size).to(device)
    net.load_state_dict(torch.load(ckpt, map_location=device, weights_only=True)["model"])
    return final_eval(net, train.normalized().to(device), train.labels,
                      meta={"dynamics": str(d), "model": cfg["model"], "epochs": dyn.epochs})


EpochsRead = Callable[[Mapping[str, Any]], "int | None"]


@dataclass(frozen=True)
class ScoreSpec:
    name: str
    fn: Callable[..., np.ndarray]
    direction: str
    paper: str
    doc: str
    needs: str = "dynamics"  # one of INPUTS
    epochs: EpochsRead | None = None  # params (defaults filled in) -> epochs read from the start; None = all

    def __call__(self, dyn, **params) -> np.ndarray:
        return compute_score(self.name, dyn, **params)

    def params(self) -> dict[str, object]:
        sig = inspect.signature(self.fn)
        return {k: p.default for k, p in list(sig.parameters.items())[1:] if p.kind == p.KEYWORD_ONLY}

    def epochs_needed(self, params: Mapping[str, Any] | None = None, total_epochs: int | None = None) -> int | None:
        """How many epochs of a run (from its first) this score reads with ``params``: an int (at most
        ``total_epochs`` when given), or None when it needs them all or the final model (a window counted
        from the end, the last epoch, an eval pass of the trained model)."""
        if self.needs != "dynamics" or self.epochs is None:
            return None
        p = {**self.params(), **dict(params or {})}
        _check_params(self, dict(params or {}))
        e = self.epochs(p)
        if e is None:
            return None
        e = int(e)
        if e < 1:
            raise ConfigError(f"score {self.name!r}: parameters {dict(params or {})} read no epoch")
        return min(e, int(total_epochs)) if total_epochs is not None else e


SCORES: Registry[ScoreSpec] = Registry("score")


def register_score(name: str, *, direction: str, paper: str, needs: str = "dynamics", epochs: EpochsRead | None = None):
    """``needs``: ``"dynamics"`` (a :class:`Dynamics` or a list of runs) or ``"final_eval"`` (a :class:`FinalEval`).
    ``epochs``: the parameters (defaults filled in) -> how many epochs from the first the score reads (None: all
    of them, or the final model); default None."""
    if direction not in DIRECTIONS:
        raise ValueError(f"score {name}: direction {direction!r} not in {DIRECTIONS}")
    if needs not in INPUTS:
        raise ValueError(f"score {name}: needs {needs!r} not in {INPUTS}")

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        fn.direction = direction  # type: ignore[attr-defined]
        SCORES.register(name, ScoreSpec(name, fn, direction, paper, inspect.getdoc(fn) or "", needs, epochs))
        return fn

    return deco


def list_scores(pattern: str = "*", *, needs: str | None = None) -> list[str]:
    """Registered score names (``needs``: only those reading ``"dynamics"`` or a ``"final_eval"``)."""
    return [n for n in SCORES.names(pattern) if needs is None or SCORES.get(n).needs == needs]


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


def check_input(spec: ScoreSpec, dyn) -> None:
    """A clear error when a score is given the wrong kind of input (dynamics vs the final eval pass)."""
    if spec.needs == "final_eval" and not isinstance(dyn, FinalEval):
        raise ConfigError(f"score {spec.name!r} reads the final model's eval-mode outputs, not training dynamics: "
                          "give a FinalEval (harness.pruning.scores.final_eval / final_eval_from_dynamics)")
    if spec.needs == "dynamics" and isinstance(dyn, FinalEval):
        raise ConfigError(f"score {spec.name!r} reads training dynamics, not a final eval pass")


def compute_score(name: str, dyn, **params) -> np.ndarray:
    spec = get_score(name)
    _check_params(spec, params)
    check_input(spec, dyn)
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


def _upto(end: Any) -> int | None:
    """Epochs read by a window ``[start, end)`` whose ``end`` counts from the first epoch (None / negative: from
    the last one, so all epochs)."""
    return None if end is None or int(end) < 0 else int(end)


def _window_end(p: Mapping[str, Any]) -> int | None:
    """A window ``[start, end)``: a negative ``start`` counts from the last epoch, so the run must be whole."""
    return None if int(p["start"]) < 0 else _upto(p["end"])


def _one(dyn) -> Dynamics:
    if isinstance(dyn, (list, tuple)):
        if len(dyn) != 1:
            raise ConfigError("this score takes one dynamics run")
        return dyn[0]
    return dyn


# --- scores ---------------------------------------------------------------------------------------
@register_score("forgetting", direction="high_hard", paper="Toneva et al., ICLR 2019; CCS (Zheng et al., ICLR 2023)",
                epochs=_window_end)
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


@register_score("el2n", direction="high_hard", paper="Paul et al., NeurIPS 2021; CCS generate_importance_score.EL2N",
                epochs=_window_end)
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


@register_score("aum", direction="low_hard", paper="Pleiss et al., NeurIPS 2020; CCS accumulated_margin",
                epochs=_window_end)
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


@register_score("entropy", direction="high_hard", paper="Coleman et al., ICLR 2020 (SVP); CCS/DUAL entropy",
                epochs=lambda p: None if int(p["epoch"]) < 0 else int(p["epoch"]) + 1)
def entropy(dyn, *, epoch: int = -1) -> np.ndarray:
    """Prediction entropy -sum_c p_c log(p_c + 1e-10) at one epoch (default the last), training-time outputs.

    This is DUAL's ``entropy()`` (last epoch's training-mode logits on augmented inputs). CCS/YOCO
    instead run the final checkpoint in eval mode on un-augmented inputs (CCS even without
    normalisation); that needs a forward pass, not dynamics. High = hard.
    """
    dyn = _one(dyn)
    s, _ = _window(dyn, epoch, (epoch + 1) if epoch >= 0 else (dyn.epochs + epoch + 1), "entropy")
    return np.asarray(dyn.stat("entropy")[s], dtype=np.float64)


@register_score("loss", direction="high_hard", paper="training loss (CCS data-score 'loss')", epochs=_window_end)
def loss(dyn, *, start: int = -1, end: int | None = None) -> np.ndarray:
    """Mean cross-entropy loss over epochs [start, end) (default: the last epoch). High = hard."""
    dyn = _one(dyn)
    s, e = _window(dyn, start, end, "loss")
    acc = np.zeros(dyn.n)
    for row in _rows(dyn, "loss", s, e):
        acc += row
    return acc / (e - s)


# GoldFromOres (Xu et al., "Distill Gold from Massive Ores", ECCV 2024; github silicx/GoldFromOres). The
# authors released per-sample scores (drop_utils/resource/*.json) but never the code that computed them;
# their README defines LossInit as the "loss value in the initial epochs" and LossConverge as the "loss
# value after convergence". We chose, among candidates computed from one seeded run each (ConvNet width
# 32, SGD 0.01 / 0.9 / 5e-4, batch 256, seed 0; this project's 2-core CPU VM), the definitions whose ranking
# agrees best with the released files (Spearman rho over all training images). scripts/goldfromores_agreement.py
# reproduces the rows marked (s); the others are from an exploratory run of the same procedure.
#
# - LossConverge, MNIST (60,000) vs MNIST_LossConverge.json: eval-mode loss of the trained model after
#   1 / 3 / 10 epochs 0.941 / 0.923 / 0.877 (s); training-time loss of epoch 1 / 2 / 3 / 10 0.609 / 0.919 /
#   0.908 / 0.842 (s); mean training-time loss over epochs 1..6 0.704. On MNIST the eval pass beats the
#   training-time loss of the same epoch every time, and after one epoch its extremes match theirs (min
#   1.2e-4 vs 1.3e-4, max 12.9 vs 12.7).
# - LossConverge, CIFAR-10 JPEG copy vs CIFAR10_LossConverge.json: eval-mode loss after 1 / 2 / 4 / 8 epochs
#   0.737 / 0.823 / 0.851 / 0.866 (median 0.40 after 8 vs their 0.32); training-time loss of epoch 4 / 8
#   0.858 / 0.875 and its mean over epochs 1..8 0.889 come a little closer here, but the multi-epoch mean
#   fails on MNIST (0.704) and the single training-time epoch trails the eval pass there, so the eval pass
#   is the definition that holds on both. MNIST's file looks like short training, CIFAR-10's like long;
#   the default, 10 epochs, is the compromise.
# - LossInit, CIFAR-10 JPEG copy vs CIFAR10_LossInit.json: mean training-time loss over the first 1 / 2 / 3
#   epochs 0.710 / 0.743 / 0.727 (s), over 4 / 8 epochs 0.710 / 0.664 (the recipes formerly used a 10-epoch
#   mean); the eval-mode loss after 1 / 2 epochs 0.710 / 0.601; the untrained model's 0.153. Hence the
#   2-epoch mean. Their CIFAR-100 LossInit (mean 4.658 ~ ln 100) also says "barely trained".
@register_score("loss_init", direction="high_hard", paper="GoldFromOres (Xu et al., ECCV 2024): LossInit",
                epochs=lambda p: int(p["epochs"]))
def loss_init(dyn, *, epochs: int = 2) -> np.ndarray:
    """GoldFromOres LossInit: mean training-time cross-entropy over the first ``epochs`` epochs (default 2).

    Each sample's loss is the one recorded at the step it was trained in (train mode, the protocol's
    augmentation), ``(1/E) sum_{t<E} loss_t(x)``. The authors' README: "loss value in the initial epochs";
    the 2-epoch mean agreed best with their released CIFAR10_LossInit.json (Spearman 0.743; 1 epoch 0.710,
    4 epochs 0.710, the untrained model 0.153; see the comment above). The dynamics must hold at least
    ``epochs`` epochs. High = hard; ``LossInit_large`` drops the high end per class.
    """
    dyn = _one(dyn)
    if int(epochs) < 1 or int(epochs) > dyn.epochs:
        raise ConfigError(f"loss_init: epochs={epochs}, but the dynamics hold {dyn.epochs} epochs "
                          f"(need 1..{dyn.epochs})")
    return loss(dyn, start=0, end=int(epochs))


@register_score("loss_converge", direction="high_hard", paper="GoldFromOres (Xu et al., ECCV 2024): LossConverge",
                needs="final_eval")
def loss_converge(ev: FinalEval) -> np.ndarray:
    """GoldFromOres LossConverge: cross-entropy of each training sample under the trained model, in eval
    mode on the un-augmented image, ``-log softmax(f_final(x))_y`` (a :class:`FinalEval`).

    The authors' README: "loss value after convergence". An eval pass of the trained model agreed with
    their released MNIST_LossConverge.json better than any training-time loss (Spearman 0.94 vs at most
    0.92, and 0.70 for a multi-epoch mean) and trailed the best training-time variant on CIFAR-10 by at
    most 0.023 (see the comment above).
    How long the model trains is the scoring run's business (the condense default: 10 epochs of
    :func:`harness.pruning.goldfromores.record_loss_run`); for a dynamics run it is that run's final model
    (:func:`final_eval_from_dynamics`). High = hard.
    """
    return ev.loss()


def _topk_epochs(dyn: Dynamics, stop_epoch: int, k: int, by: str) -> list[int]:
    if by == "correct":
        key = [-float(np.nansum(r)) for r in _rows(dyn, "correct", 0, stop_epoch)]
    elif by == "loss":
        key = [float(np.nanmean(r)) for r in _rows(dyn, "loss", 0, stop_epoch)]
    else:
        raise ConfigError(f"lbpe: by={by!r}, expected 'correct' or 'loss'")
    order = np.argsort(np.asarray(key), kind="stable")  # ties: earlier epoch first
    return sorted(int(e) for e in order[:k])


@register_score("lbpe", direction="high_hard", paper="YOCO (He et al., NeurIPS 2023): LBPE_top{K}",
                epochs=lambda p: _upto(p["stop_epoch"]))
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


@register_score("tdds", direction="high_hard", paper="TDDS (Zhang et al., CVPR 2024)", epochs=lambda p: int(p["T"]))
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


@register_score("dual", direction="high_hard", paper="DUAL (Cho et al., arXiv 2502.06905)",
                epochs=lambda p: int(p["T"]))
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


@register_score("dynunc", direction="high_hard", paper="Dyn-Unc (He et al., CVPR 2024) as in DUAL's code",
                epochs=lambda p: _upto(p["T"]))
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
    """Several scores from one dynamics (each streamed separately); ``per_score[name]`` = params.
    Default names: every score that reads this kind of input (dynamics, or a :class:`FinalEval`)."""
    names = names or list_scores(needs="final_eval" if isinstance(dyn, FinalEval) else "dynamics")
    return {n: compute_score(n, dyn, **per_score.get(n, {})) for n in names}
