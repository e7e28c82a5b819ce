"""Training dynamics: per-sample, per-epoch statistics recorded online, stored in dataset order.

:class:`DynamicsRecorder` is a :class:`harness.engine.TrainHook`. After every optimiser step it gets
the batch's dataset indices, the (detached, float) training-time logits of each sample's own view
and its hard label, computes the statistics in :data:`STATS` and scatters them **by index**, so the
arrays are in original dataset order whatever the loader order was. At each epoch end it flushes one
row per statistic to memory-mapped ``.npy`` files and then commits ``epochs_done`` in ``meta.json``
(write-then-rename), so a killed run keeps every finished epoch. The on-disk format is described in
``docs/dynamics.md``. :func:`record_dynamics` is the one function that trains a model with the recorder
(the coreset flow, shrink and GoldFromOres scoring all call it).

Statistics for sample i at epoch t from its logits z and label y (p = softmax(z)):

- ``target_prob``  p_y
- ``logit_margin`` z_y - max_{k != y} z_k          (AUM, Pleiss et al. 2020)
- ``prob_margin``  p_y - max_{k != y} p_k          (CCS/YOCO "accumulated_margin" terms)
- ``loss``         -log p_y
- ``correct``      1[argmax z == y]
- ``el2n``         ||p - onehot(y)||_2              (EL2N / LBPE per epoch)
- ``entropy``      -sum_c p_c log(p_c + 1e-10)
- ``kl_prev``      sum_c |p_{t,c} (log(p_{t,c} + 1e-8) - log(p_{t-1,c} + 1e-8))|  (TDDS; NaN at t = 0)

A sample not seen in an epoch gets NaN in that epoch's row.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.data.images import LabeledImages
from harness.engine.options import EngineOptions, choose_compile, resolve_precision, training_flops
from harness.engine.protocol import TrainProtocol
from harness.engine.trainer import Trainer, TrainHook, seeded_model
from harness.errors import ConfigError, FormatError
from harness.evaluate import loss_for, model_input, targets_for
from harness.io import atomic_write_json, read_meta_json
from harness.locks import describe_owner, hold
from harness.models import create_model

_log = logging.getLogger("ddbench.dynamics")

STATS = ("target_prob", "logit_margin", "prob_margin", "loss", "correct", "el2n", "entropy", "kl_prev")
FORMAT = "ddbench-dynamics"
VERSION = 1
META = "meta.json"
CHECKPOINT = "checkpoint.pt"
_EPS_KL = 1e-8
_EPS_ENT = 1e-10


def _jsonable(obj: Any) -> Any:
    """Normalise through JSON so that tuples/lists and int/float keys compare equal after a round trip."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def batch_stats(logits: torch.Tensor, labels: torch.Tensor, prev_probs: torch.Tensor | None = None
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The per-sample statistics of one batch (float32, on the logits' device) and its probabilities."""
    z = logits.float()
    y = labels.long().view(-1, 1)
    logp = F.log_softmax(z, dim=1)
    p = logp.exp()
    zy = z.gather(1, y)[:, 0]
    py = p.gather(1, y)[:, 0]
    own = torch.zeros_like(z, dtype=torch.bool).scatter_(1, y, True)
    z_other = z.masked_fill(own, float("-inf")).amax(1)
    p_other = p.masked_fill(own, float("-inf")).amax(1)
    onehot = own.float()
    out = {
        "target_prob": py,
        "logit_margin": zy - z_other,
        "prob_margin": py - p_other,
        "loss": -logp.gather(1, y)[:, 0],
        "correct": (z.argmax(1) == y[:, 0]).float(),
        "el2n": (p - onehot).norm(dim=1),
        "entropy": -(p * torch.log(p + _EPS_ENT)).sum(1),
    }
    if prev_probs is None:
        out["kl_prev"] = torch.full_like(py, float("nan"))
    else:
        q = prev_probs.to(p.device, torch.float32)
        out["kl_prev"] = (p * (torch.log(p + _EPS_KL) - torch.log(q + _EPS_KL))).abs().sum(1)
    return out, p


class Dynamics:
    """Per-sample statistics, ``(epochs, N)`` each, in original dataset order (in memory or memmapped)."""

    def __init__(self, *, n: int, num_classes: int, labels: np.ndarray, epochs: int,
                 stats: dict[str, np.ndarray], logits: np.ndarray | None = None, meta: dict | None = None,
                 directory: Path | None = None) -> None:
        self.n, self.num_classes, self.epochs = int(n), int(num_classes), int(epochs)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.meta = dict(meta or {})
        self.directory = directory
        self._stats = stats
        self._logits = logits

    def __repr__(self) -> str:
        where = f", dir={str(self.directory)!r}" if self.directory else ""
        return f"Dynamics(n={self.n}, num_classes={self.num_classes}, epochs={self.epochs}{where})"

    @property
    def stats(self) -> tuple[str, ...]:
        return tuple(s for s in STATS if s in self._stats)

    def stat(self, name: str) -> np.ndarray:
        """``(epochs, N)`` float32 array of one statistic (a read-only memmap for on-disk dynamics)."""
        if name not in STATS:
            raise ConfigError(f"unknown dynamics statistic {name!r} (known: {', '.join(STATS)})")
        if name not in self._stats:
            where = f" in {self.directory}" if self.directory else ""
            raise FormatError(f"dynamics{where} have no {name!r} statistic (have: {', '.join(self.stats)})")
        return self._stats[name][: self.epochs]

    def logits(self) -> np.ndarray | None:
        return None if self._logits is None else self._logits[: self.epochs]

    def head(self, epochs: int) -> Dynamics:
        """The first ``epochs`` epochs of this run (a view on the same arrays; ``self`` when it has as many)."""
        if not 0 <= int(epochs) <= self.epochs:
            raise ConfigError(f"dynamics hold {self.epochs} epochs; cannot take the first {epochs}")
        if int(epochs) == self.epochs:
            return self
        return Dynamics(n=self.n, num_classes=self.num_classes, labels=self.labels, epochs=int(epochs),
                        stats=self._stats, logits=self._logits, meta={**self.meta, "epochs_used": int(epochs)},
                        directory=self.directory)

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, labels, num_classes: int, logits: np.ndarray | None = None, meta: dict | None = None,
                    **stats: np.ndarray) -> Dynamics:
        """In-memory dynamics from ``(epochs, N)`` arrays (any subset of :data:`STATS`)."""
        labels = np.asarray(labels, dtype=np.int64)
        n = labels.shape[0]
        bad = sorted(set(stats) - set(STATS))
        if bad:
            raise ConfigError(f"unknown dynamics statistics {bad} (known: {', '.join(STATS)})")
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in stats.items()}
        if logits is not None:
            logits = np.asarray(logits, dtype=np.float32)
            if logits.ndim != 3 or logits.shape[1:] != (n, num_classes):
                raise FormatError(f"logits have shape {logits.shape}, expected (epochs, {n}, {num_classes})")
        shapes = {k: a.shape for k, a in arrays.items()}
        epochs = {s[0] for s in shapes.values() if len(s) == 2 and s[1] == n}
        if logits is not None:
            epochs.add(logits.shape[0])
        if len(epochs) > 1 or any(len(s) != 2 or s[1] != n for s in shapes.values()):
            raise FormatError(f"stat arrays must all be (epochs, {n}); got {shapes}")
        if not arrays and logits is None:
            raise ConfigError("from_arrays needs at least one statistic or logits")
        return cls(n=n, num_classes=num_classes, labels=labels, epochs=epochs.pop(), stats=arrays,
                   logits=logits, meta=meta)

    @classmethod
    def from_logits(cls, logits: np.ndarray, labels, num_classes: int | None = None,
                    keep_logits: bool = False, out_dir: str | Path | None = None) -> Dynamics:
        """All statistics computed from ``(epochs, N, C)`` logits in dataset order."""
        logits = np.asarray(logits, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
        num_classes = num_classes or logits.shape[2]
        rec = DynamicsRecorder(labels.shape[0], num_classes, out_dir=out_dir, keep_logits=keep_logits,
                               labels=labels, meta={"epochs": logits.shape[0], "source": "logits"})
        idx = torch.arange(labels.shape[0])
        for e in range(logits.shape[0]):
            rec.on_batch(e, idx, torch.from_numpy(logits[e]), torch.from_numpy(labels))
            rec.on_epoch_end(e, None)
        rec.finish()
        return rec.dynamics()

    @classmethod
    def open(cls, directory: str | Path) -> Dynamics:
        d = Path(directory)
        meta = _read_meta(d)
        if meta is None:
            raise FormatError(f"{d}: no {META}; not a ddbench dynamics directory (see docs/dynamics.md)")
        try:
            n, c, _ = int(meta["n"]), int(meta["num_classes"]), int(meta["epochs_done"])
            names = [str(s) for s in meta["stats"]]
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{d / META}: missing or malformed entry ({e!r})") from None
        stats = {}
        for s in names:
            f = d / f"{s}.npy"
            try:
                arr = np.load(f, mmap_mode="r")
            except (OSError, ValueError, EOFError) as e:
                raise FormatError(f"{f}: cannot read ({e}); expected a float32 (epochs, {n}) .npy") from None
            if arr.ndim != 2 or arr.shape[1] != n or arr.shape[0] < meta["epochs_done"]:
                raise FormatError(f"{f}: shape {arr.shape}, expected (>= {meta['epochs_done']}, {n})")
            stats[s] = arr
        logits = np.load(d / "logits.npy", mmap_mode="r") if meta.get("keep_logits") else None
        try:
            labels = np.load(d / "labels.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise FormatError(f"{d / 'labels.npy'}: cannot read ({e}); expected ({n},) int64 labels") from None
        if labels.shape != (n,):
            raise FormatError(f"{d / 'labels.npy'}: shape {labels.shape}, expected ({n},)")
        return cls(n=n, num_classes=c, labels=labels, epochs=meta["epochs_done"], stats=stats, logits=logits,
                   meta=meta, directory=d)


def _read_meta(d: Path) -> dict | None:
    f = d / META
    return read_meta_json(f, FORMAT) if f.is_file() else None


class DynamicsRecorder:
    """A :class:`harness.engine.TrainHook` that records :data:`STATS` per sample and epoch.

    ``out_dir=None`` keeps everything in memory; otherwise the rows go to memmapped ``.npy`` files
    (capacity ``meta["epochs"]`` rows, grown if exceeded). A directory that already holds a run with
    the same ``meta`` is resumed from its ``epochs_done``. ``checkpoint=True`` also saves the
    trainer's ``state_dict()`` each epoch (before the epoch is committed), for :func:`record_dynamics`.
    """

    def __init__(self, n: int, num_classes: int, out_dir: str | Path | None = None, meta: dict | None = None,
                 keep_logits: bool = False, *, labels: np.ndarray | None = None, checkpoint: bool = False) -> None:
        if n < 1 or num_classes < 2:
            raise ConfigError(f"recorder needs n >= 1 and num_classes >= 2, got n={n}, num_classes={num_classes}")
        self.n, self.num_classes, self.keep_logits = int(n), int(num_classes), bool(keep_logits)
        self.meta = _jsonable(dict(meta or {}))
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.checkpoint = checkpoint
        self.labels = (np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64).copy())
        if self.labels.shape != (n,):
            raise ConfigError(f"labels have shape {self.labels.shape}, expected ({n},)")
        self.epochs_done = 0
        self.finished = False
        self.engine: list[dict[str, Any]] = []  # how each training session ran (record_dynamics)
        self._prev: torch.Tensor | None = None  # (N, C) probabilities of the last finished epoch
        self._cur_probs = torch.full((n, num_classes), float("nan"))
        self._row = {s: np.full(n, np.nan, np.float32) for s in STATS}
        self._row_logits = np.full((n, num_classes), np.nan, np.float32) if keep_logits else None
        self._epoch: int | None = None
        self._mem: dict[str, list[np.ndarray]] = {s: [] for s in STATS}
        self._mem_logits: list[np.ndarray] = []
        self._mm: dict[str, np.ndarray] = {}
        if self.out_dir is not None:
            self._open_dir()

    # --- disk ----------------------------------------------------------------------------------
    def _capacity(self) -> int:
        return max(1, int(self.meta.get("epochs") or 16))

    def _disk_meta(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "n": self.n, "num_classes": self.num_classes,
                "stats": list(STATS), "keep_logits": self.keep_logits, "epochs_done": self.epochs_done,
                "capacity": self._cap, "finished": self.finished, "config": self.meta, "engine": self.engine}

    def _open_dir(self) -> None:
        d = self.out_dir
        d.mkdir(parents=True, exist_ok=True)
        old = _read_meta(d)
        if old is not None and (old.get("config") != self.meta or old["n"] != self.n
                                or old["num_classes"] != self.num_classes
                                or bool(old.get("keep_logits")) != self.keep_logits):
            raise ConfigError(f"{d} already holds dynamics of a different run (config {old.get('config')}); "
                              f"use another directory or delete it")
        if old is not None:
            self._cap = int(old["capacity"])
            self._mm = {s: np.load(d / f"{s}.npy", mmap_mode="r+") for s in STATS}
            if self.keep_logits:
                self._mm["logits"] = np.load(d / "logits.npy", mmap_mode="r+")
            saved = np.load(d / "labels.npy")
            if (self.labels >= 0).any() and not np.array_equal(saved, self.labels):
                raise ConfigError(f"{d}: labels differ from the recorded run's")
            self.labels = saved
            self.finished = bool(old.get("finished"))
            self.engine = list(old.get("engine") or [])
            self._set_epochs_done(int(old["epochs_done"]))
            return
        self._cap = self._capacity()
        self._alloc(self._cap)
        np.save(d / "labels.npy", self.labels)
        atomic_write_json(d / META, self._disk_meta())

    def _alloc(self, cap: int) -> None:
        """(Re)allocate the memmaps with ``cap`` rows, keeping rows already written."""
        d = self.out_dir
        for s in (*STATS, *(("logits",) if self.keep_logits else ())):
            shape = (cap, self.n) if s != "logits" else (cap, self.n, self.num_classes)
            tmp = d / f".{s}.npy.tmp"
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
            if s in self._mm:
                mm[: self.epochs_done] = self._mm[s][: self.epochs_done]
            mm.flush()
            del mm
            os.replace(tmp, d / f"{s}.npy")
            self._mm[s] = np.load(d / f"{s}.npy", mmap_mode="r+")
        self._cap = cap

    def _probs_file(self, epoch: int) -> Path:
        return self.out_dir / f"_probs_e{epoch}.npy"

    def _set_epochs_done(self, e: int) -> None:
        """Adopt ``e`` finished epochs (on resume) and load the probabilities kl_prev needs."""
        self.epochs_done = e
        self._prev = None
        if e > 0 and self.out_dir is not None:
            f = self._probs_file(e - 1)
            if f.is_file():
                self._prev = torch.from_numpy(np.load(f))
            elif self.keep_logits:
                self._prev = torch.softmax(torch.from_numpy(np.array(self._mm["logits"][e - 1])), 1)
            # else: checked in on_batch (a resume may first move epochs_done via commit_epochs)

    def commit_epochs(self, e: int) -> None:
        """Mark ``e`` epochs as done (rows already written), e.g. when a checkpoint is one epoch ahead."""
        self._set_epochs_done(e)
        self.save_meta()

    def save_meta(self) -> None:
        """Rewrite ``meta.json`` (on disk only), e.g. after adding an ``engine`` entry."""
        if self.out_dir is not None:
            atomic_write_json(self.out_dir / META, self._disk_meta())

    # --- the hook ------------------------------------------------------------------------------
    def on_batch(self, epoch: int, index: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if epoch != self.epochs_done:
            raise ConfigError(f"recorder got epoch {epoch} but {self.epochs_done} epochs are done; "
                              "epochs must arrive in order")
        if epoch > 0 and self._prev is None:
            raise FormatError(f"{self.out_dir}: resuming at epoch {epoch} needs _probs_e{epoch - 1}.npy "
                              "(the previous epoch's probabilities for kl_prev), which is missing")
        self._epoch = epoch
        idx = torch.as_tensor(index).long().cpu()
        z = logits.detach().float().cpu()
        y = torch.as_tensor(labels).long().cpu()
        if z.ndim != 2 or z.shape[1] != self.num_classes or z.shape[0] != idx.shape[0] or y.shape != idx.shape:
            raise FormatError(f"batch logits {tuple(z.shape)}, index {tuple(idx.shape)}, labels {tuple(y.shape)}: "
                              f"expected (B, {self.num_classes}), (B,), (B,)")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.n):
            raise FormatError(f"batch indices outside [0, {self.n})")
        prev = self._prev[idx] if self._prev is not None else None
        stats, p = batch_stats(z, y, prev)
        i = idx.numpy()
        for s in STATS:
            self._row[s][i] = stats[s].numpy()
        self._cur_probs[idx] = p
        self.labels[i] = y.numpy()
        if self._row_logits is not None:
            self._row_logits[i] = z.numpy()

    def on_epoch_end(self, epoch: int, trainer: Any) -> None:
        if epoch != self.epochs_done:
            raise ConfigError(f"recorder: end of epoch {epoch} but {self.epochs_done} epochs are done")
        if self.out_dir is None:
            for s in STATS:
                self._mem[s].append(self._row[s].copy())
            if self._row_logits is not None:
                self._mem_logits.append(self._row_logits.copy())
        else:
            if epoch >= self._cap:
                self._alloc(max(self._cap * 2, epoch + 1))
            for s in STATS:
                self._mm[s][epoch] = self._row[s]
                self._mm[s].flush()
            if self._row_logits is not None:
                self._mm["logits"][epoch] = self._row_logits
                self._mm["logits"].flush()
            # probabilities of this epoch (for kl_prev after a resume), then checkpoint, then commit
            f = self._probs_file(epoch)
            tmp = f.with_name(f".{f.name}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, self._cur_probs.numpy())
            os.replace(tmp, f)
            if self.checkpoint and trainer is not None:
                ckpt = self.out_dir / CHECKPOINT
                tmp = ckpt.with_name(f".{ckpt.name}.tmp")
                torch.save(trainer.state_dict(), tmp)
                os.replace(tmp, ckpt)
            np.save(self.out_dir / "labels.npy", self.labels)
        self._prev = self._cur_probs
        self._cur_probs = torch.full((self.n, self.num_classes), float("nan"))
        for s in STATS:
            self._row[s].fill(np.nan)
        if self._row_logits is not None:
            self._row_logits.fill(np.nan)
        self.epochs_done = epoch + 1
        if self.out_dir is not None:
            atomic_write_json(self.out_dir / META, self._disk_meta())
            old = self._probs_file(epoch - 1)
            old.unlink(missing_ok=True)

    def finish(self) -> None:
        """Mark the run finished (a finished run is returned by :func:`record_dynamics` without training)."""
        self.finished = True
        if self.out_dir is not None:
            atomic_write_json(self.out_dir / META, self._disk_meta())

    def dynamics(self) -> Dynamics:
        if self.out_dir is not None:
            return Dynamics.open(self.out_dir)
        e = self.epochs_done
        stats = {s: (np.stack(self._mem[s]) if e else np.zeros((0, self.n), np.float32)) for s in STATS}
        logits = (np.stack(self._mem_logits) if e else np.zeros((0, self.n, self.num_classes), np.float32)
                  ) if self.keep_logits else None
        return Dynamics(n=self.n, num_classes=self.num_classes, labels=self.labels.copy(), epochs=e, stats=stats,
                        logits=logits, meta={"config": self.meta, "epochs_done": e, "finished": self.finished,
                                             "engine": list(self.engine)})


LOCK = ".lock"
# temporaries the recorder writes inside its folder (exact names; removed under the lock after a kill)
_TMP_NAMES = re.compile(rf"\.(?:(?:{'|'.join(STATS)}|logits)\.npy|_probs_e\d+\.npy|{re.escape(CHECKPOINT)})\.tmp")


@contextlib.contextmanager
def dynamics_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold the lock of a dynamics folder (``<out_dir>/.lock``, :mod:`harness.locks`) for the block.

    Only one process records into a folder at a time: another one waits (sleep and retry) until the
    holder finishes or dies, then finds the run finished (and reuses it) or resumes it. Temporaries a
    killed recorder left inside the folder are removed once the lock is held.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)

    def waiting(owner: dict | None) -> None:
        _log.warning("%s: %s is recording these dynamics; waiting for it to finish", d, describe_owner(owner))

    with hold(d / LOCK, on_wait=waiting):
        for f in d.iterdir():
            if _TMP_NAMES.fullmatch(f.name):
                f.unlink(missing_ok=True)
        yield


def run_protocol(train: LabeledImages, protocol: TrainProtocol, *, options: EngineOptions | None = None,
                 device: str | torch.device = "cpu") -> TrainProtocol:
    """The protocol a dynamics run on ``train`` trains under: the loss the set's labels need
    (:func:`harness.evaluate.loss_for`: soft labels train with soft CE, or MSE for regression targets) and
    the precision that runs on ``device`` (:func:`harness.engine.options.resolve_precision`)."""
    return resolve_precision(loss_for(train, protocol), options, device)[0]


def dynamics_config(train: LabeledImages, protocol: TrainProtocol, *, seed: int, model: str | None = None,
                    model_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config that identifies a dynamics run (its cache key: ``harness.io.config_hash`` of it).
    ``protocol`` as it runs (:func:`run_protocol`); ``model_kwargs`` only when given."""
    name = train.name or "dataset"
    dataset, _, split = name.partition(":")
    cfg = {"dataset": dataset, "split": split or "train", "n": len(train), "model": model or protocol.model,
           "seed": int(seed), "protocol": protocol.as_dict()}
    if model_kwargs:
        cfg["model_kwargs"] = dict(model_kwargs)
    return _jsonable(cfg)


def record_dynamics(train: LabeledImages, protocol: TrainProtocol, *, seed: int, out_dir: str | Path | None = None,
                    device: str | torch.device = "cpu", model: str | None = None, keep_logits: bool = False,
                    options: EngineOptions | None = None, return_model: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    model_kwargs: Mapping[str, Any] | None = None, hooks: Sequence[TrainHook] = (),
                    until_epoch: int | None = None) -> Dynamics | tuple[Dynamics, nn.Module]:
    """Train a fresh model (seeded by ``seed``) on ``train`` under ``protocol`` and record its dynamics.

    The one training-with-the-recorder of ddbench: the coreset flow, shrink (YOCO) and GoldFromOres scoring
    all call it. The model trains on the set's own input space (:func:`harness.evaluate.model_input`:
    ZCA-space images as stored, else normalized pixels) with the targets its labels need (soft labels:
    :func:`harness.evaluate.loss_for`); the dynamics statistics read the hard labels. ``model`` /
    ``model_kwargs``: the architecture (default: the protocol's). ``options``: precision and compile
    (:class:`harness.engine.EngineOptions`, resolved for this run: ``auto`` compiles only when the epochs
    trained here pass the measured break-even; one run, so ``path`` does not apply); each training session is
    recorded in ``meta["engine"]`` (resolved values). ``hooks``: more :class:`harness.engine.TrainHook` s,
    called after the recorder (only when training happens).

    ``until_epoch``: train and record only the first ``until_epoch`` epochs (None: the whole protocol), e.g. the
    epochs a score reads (:meth:`harness.pruning.scores.ScoreSpec.epochs_needed`). The cut run follows the whole
    protocol's schedule (the same learning rate at every step, the same data order), so its rows are the first
    rows of a full-length recording, bit for bit. The returned dynamics hold exactly ``min(until_epoch, total)``
    epochs.

    With ``out_dir`` the arrays, ``meta.json`` and a trainer checkpoint are written there every epoch; a
    killed run resumes from its last finished epoch. A run with the same config that holds enough epochs
    (finished, or stopped at or after ``until_epoch``) is returned without training; a run cut shorter is
    resumed (a cut run is left resumable, not finished). ``return_model=True`` returns
    ``(dynamics, final model)`` (a finished run's model is loaded from its checkpoint); it needs the whole run.
    """
    device = torch.device(device)
    proto = run_protocol(train, protocol, options=options, device=device)
    config = dynamics_config(train, proto, seed=seed, model=model, model_kwargs=model_kwargs)
    total = proto.total_epochs
    config["epochs"] = total
    if until_epoch is not None and int(until_epoch) < 1:
        raise ConfigError(f"record_dynamics: until_epoch={until_epoch}, expected a positive number of epochs or None")
    target = total if until_epoch is None else min(int(until_epoch), total)
    if return_model and target < total:
        raise ConfigError(f"record_dynamics: return_model needs the final model, but until_epoch={until_epoch} "
                          f"stops the run at epoch {target} of {total}")
    arch = model or proto.model

    def build() -> nn.Module:
        return create_model(arch, num_classes=train.num_classes, in_chans=train.channels, img_size=train.size,
                            **dict(model_kwargs or {}))

    out = Path(out_dir) if out_dir is not None else None
    with contextlib.ExitStack() as held:
        if out is not None:
            held.enter_context(dynamics_lock(out))  # one recorder per folder; others wait, then reuse or resume
            old = _read_meta(out)
            if (old is not None and old.get("config") == _jsonable(config)
                    and (old.get("finished") or int(old.get("epochs_done", 0)) >= target)):
                dyn = Dynamics.open(out).head(target)
                if not return_model:
                    return dyn
                net = build().to(device)
                net.load_state_dict(torch.load(out / CHECKPOINT, map_location=device, weights_only=True)["model"])
                return dyn, net
        labels = train.labels.cpu().numpy()
        rec = DynamicsRecorder(len(train), train.num_classes, out_dir=out, meta=config, keep_logits=keep_logits,
                               labels=labels, checkpoint=out is not None)
        net = seeded_model(build, seed).to(device)
        flops = None
        if options is None or options.compile == "auto":
            flops = training_flops(arch, num_classes=train.num_classes, in_chans=train.channels,
                                   img_size=train.size, samples=max(0, target - rec.epochs_done) * len(train),
                                   model_kwargs=model_kwargs)
        compile_, notes = choose_compile(options, device, precision=proto.precision, train_flops=flops)
        trainer = Trainer(net, proto.with_(model=arch), seed=seed, hooks=[rec, *hooks], progress=progress,
                          compile=compile_)
        if out is not None and rec.epochs_done > 0:
            ckpt = out / CHECKPOINT
            if not ckpt.is_file():
                raise FormatError(f"{out}: {rec.epochs_done} epochs recorded but {CHECKPOINT} is missing; "
                                  "delete the directory to start over")
            state = torch.load(ckpt, map_location=device, weights_only=True)
            trainer.load_state_dict(state)
            if trainer.epoch == rec.epochs_done + 1:  # killed after the checkpoint, before the commit
                rec.commit_epochs(trainer.epoch)
            elif trainer.epoch != rec.epochs_done:
                raise FormatError(f"{ckpt}: checkpoint at epoch {trainer.epoch}, dynamics at {rec.epochs_done}")
        precision_notes = resolve_precision(protocol, options, device)[1]
        rec.engine.append({"from_epoch": trainer.epoch, "until_epoch": target, "path": "sequential",
                           "precision": proto.precision, **precision_notes, "compile": compile_, **notes})
        rec.save_meta()
        x = model_input(train).to(device)
        y = train.labels.to(device)
        trainer.fit(x, targets_for(train, proto).to(device), labels=y, stop_after=target)
        if trainer.epoch >= total:
            rec.finish()
        dyn = rec.dynamics().head(target)
        return (dyn, net) if return_model else dyn


def import_logit_dumps(directory: str | Path, labels: np.ndarray, num_classes: int,
                       out_dir: str | Path | None = None, keep_logits: bool = False) -> Dynamics:
    """Import TDDS/DUAL per-epoch dumps ``{e}_Output.npy`` (logits, loader order) + ``{e}_Index.npy``.

    Each epoch is reordered by its index array (which must be a permutation of ``0..N-1``) and fed to
    a :class:`DynamicsRecorder`; epochs are read one at a time (memmapped), never all at once.
    """
    d = Path(directory)
    labels = np.asarray(labels, dtype=np.int64)
    if not d.is_dir():
        raise FormatError(f"{d}: no such directory (expected TDDS/DUAL dumps {{e}}_Output.npy + {{e}}_Index.npy)")
    epochs = set()
    for f in d.glob("*_Output.npy"):
        head = f.name[: -len("_Output.npy")]
        if head.isdigit():
            epochs.add(int(head))
    if not epochs:
        raise FormatError(f"{d}: no {{e}}_Output.npy files")
    last = max(epochs)
    missing = sorted(set(range(last + 1)) - epochs)
    if missing:
        raise FormatError(f"{d}: epochs {missing[:10]} missing ({{e}}_Output.npy for e in 0..{last})")
    for e in range(last + 1):
        if not (d / f"{e}_Index.npy").is_file():
            raise FormatError(f"{d}: {e}_Output.npy has no {e}_Index.npy")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise FormatError(f"labels outside [0, {num_classes})")
    meta = {"source": str(d.resolve()), "format": "tdds-dual-dumps", "epochs": last + 1}
    with contextlib.ExitStack() as held:
        if out_dir is not None:
            held.enter_context(dynamics_lock(out_dir))  # one importer per folder
        return _feed_dumps(d, labels, num_classes, meta, out_dir, keep_logits)


def _feed_dumps(d: Path, labels: np.ndarray, num_classes: int, meta: dict, out_dir: str | Path | None,
                keep_logits: bool) -> Dynamics:
    n, last = labels.shape[0], int(meta["epochs"]) - 1
    rec = DynamicsRecorder(n, num_classes, out_dir=out_dir, meta=meta, keep_logits=keep_logits, labels=labels)
    if rec.finished:
        return rec.dynamics()
    chunk = 8192
    for e in range(rec.epochs_done, last + 1):
        fo, fi = d / f"{e}_Output.npy", d / f"{e}_Index.npy"
        out = np.load(fo, mmap_mode="r")
        idx = np.load(fi).astype(np.int64).reshape(-1)
        if out.ndim != 2 or out.shape[0] != n:
            raise FormatError(f"{fo}: shape {out.shape}, expected ({n}, {num_classes}) for N={n} labels")
        if out.shape[1] != num_classes:
            raise FormatError(f"{fo}: {out.shape[1]} classes, expected {num_classes}")
        if idx.shape[0] != n:
            raise FormatError(f"{fi}: {idx.shape[0]} indices, expected {n}")
        if idx.min() < 0 or idx.max() >= n:
            raise FormatError(f"{fi}: indices outside [0, {n})")
        counts = np.bincount(idx, minlength=n)
        if (counts != 1).any():
            dup, miss = np.flatnonzero(counts > 1), np.flatnonzero(counts == 0)
            raise FormatError(f"{fi}: not a permutation of 0..{n - 1}: duplicate indices {dup[:5].tolist()}, "
                              f"missing {miss[:5].tolist()}")
        for s in range(0, n, chunk):
            ii = idx[s:s + chunk]
            rec.on_batch(e, torch.from_numpy(ii), torch.from_numpy(np.array(out[s:s + chunk], np.float32)),
                         torch.from_numpy(labels[ii]))
        rec.on_epoch_end(e, None)
    rec.finish()
    return rec.dynamics()
