"""Data-parallel training on streamed image folders, with per-sample statistics gathered from all ranks.

ImageNet-scale coreset cells stream ``(image, label, index)`` from :class:`harness.data.ImageFolderStream`
with DataLoader workers, one process per GPU under ``torchrun`` (NCCL) or several CPU processes
(gloo). One trainer does both jobs of the coreset flow:

* **dynamics** (``record=True``): after every step the ranks ``all_gather`` their ``(index, label,
  logits)`` rows and rank 0 feeds them to one :class:`harness.dynamics.DynamicsRecorder`, so ``<out>``
  is an ordinary dynamics directory (docs/dynamics.md), index-aligned in dataset order whatever the
  sampler, worker or rank, written epoch by epoch; every score reads it like any other run.
* **subset training** (``subset=kept.npy``, ``test_root=...``): train a fresh model on the kept indices
  only and report the final accuracy on the test folder in ``<out>/result.json`` as a **fraction**
  (``test_accuracy`` in [0, 1], like every other cell; reports print percent). With ``iterations > 0``
  it runs exactly that many global optimiser steps (CCS / DUAL ImageNet: 300 000), through as many
  passes over the kept images as it takes, the last one cut short, cosine laid over those steps.

Every epoch ends with an atomic ``<out>/checkpoint.pt`` (model, optimiser, epoch); a killed run started
again with the same config resumes from it, bit for bit: the sampler order is a function of
``(seed, epoch)`` and each image's augmentation of ``(seed, epoch, index)``, whatever the number of
workers. A finished run (``result.json`` with the same config) returns at once.

Run with torchrun::

    torchrun --nproc_per_node 8 -m harness.engine.distributed --root /data/imagenet/train --out DIR --model resnet34 ...

or in-process on CPU with :func:`spawn_local` (the tests use two gloo processes); the coreset flow
launches it through :func:`launch` (``harness.pruning.stream_coreset``).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from harness.errors import ConfigError, DDBenchError

RESULT = "result.json"
RESULT_FORMAT = "ddbench.ddp-result"
CHECKPOINT = "checkpoint.pt"
AUGMENTS = ("none", "flip", "crop_flip", "rrc_flip")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class DDPConfig:
    """One DDP training run. ``batch_size`` is per rank; ``lr`` etc. as in :class:`harness.engine.TrainProtocol`.

    ``augment``: ``none`` (resize the shorter side to ``img_size``, centre crop), ``flip``,
    ``crop_flip`` (pad ``img_size // 8``, random crop, flip: the CIFAR recipe) or ``rrc_flip``
    (random-resized crop, scale 0.08-1, ratio 3/4-4/3, + flip: the ImageNet recipe). Test images are
    resized to ``img_size / 0.875`` on the shorter side and centre-cropped (``img_size`` = 224 -> 256).
    """

    root: str
    out: str
    model: str = "resnet18_cifar"
    epochs: int = 1  # passes over the data; unused when iterations > 0
    iterations: int = 0  # > 0: exactly this many optimiser steps (subset training only)
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    schedule: str = "cosine"
    eta_min: float = 0.0
    augment: str = "none"
    img_size: int = 32
    num_workers: int = 2
    seed: int = 0
    backend: str = "gloo"
    classlist: str = ""  # a classlist name or file (harness/data/classlists); "" = every class folder
    record: bool = True  # write per-sample dynamics (needs the whole training folder, no subset)
    subset: str = ""  # .npy of the training indices to train on ("" = all)
    test_root: str = ""  # image folder to report the final-epoch accuracy on ("" = none)

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTS:
            raise ConfigError(f"ddp: augment={self.augment!r}, expected one of {', '.join(AUGMENTS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"ddp: schedule={self.schedule!r}, expected one of {', '.join(SCHEDULES)}")
        if self.record and self.subset:
            raise ConfigError("ddp: record=True needs the whole training folder; drop --subset or --record")
        if self.epochs < 1 or self.batch_size < 1 or self.img_size < 1:
            raise ConfigError("ddp: epochs, batch_size and img_size must be >= 1")
        if self.iterations < 0:
            raise ConfigError(f"ddp: iterations={self.iterations}, expected 0 (epochs) or a positive step count")
        if self.record and self.iterations:
            raise ConfigError("ddp: record=True (dynamics) needs whole epochs; drop --iterations")


# --- per-sample transforms (picklable for workers; randomness from (seed, epoch, index)) -------------
class _Transform:
    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...], mode: str, seed: int) -> None:
        self.size, self.mode, self.seed = size, mode, seed
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def _resize(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (h, w):
            return x
        return F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]

    def _short_side_center(self, x: torch.Tensor, short: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = short / min(h, w)
        x = self._resize(x, max(short, round(h * s)), max(short, round(w * s)))
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        return x[:, top:top + self.size, left:left + self.size]

    def _rrc(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        area = h * w
        for _ in range(10):
            target = area * (0.08 + 0.92 * float(torch.rand((), generator=g)))
            log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(torch.rand((), generator=g))
            r = math.exp(log_r)
            cw, ch = round(math.sqrt(target * r)), round(math.sqrt(target / r))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (), generator=g))
                left = int(torch.randint(0, w - cw + 1, (), generator=g))
                return self._resize(x[:, top:top + ch, left:left + cw], self.size, self.size)
        return self._short_side_center(x, self.size)  # torchvision's fallback: the central crop

    def __call__(self, img: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        x = img.float() / 255
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 2_147_483_647 + index)
        if self.mode == "eval":
            x = self._short_side_center(x, round(self.size / 0.875))  # shorter side 256, centre 224
        elif self.mode == "rrc_flip":
            x = self._rrc(x, g)
        else:
            x = self._short_side_center(x, self.size)
            if self.mode == "crop_flip":
                p = self.size // 8
                x = F.pad(x, (p, p, p, p))
                top, left = (int(v) for v in torch.randint(0, 2 * p + 1, (2,), generator=g))
                x = x[:, top:top + self.size, left:left + self.size]
        if self.mode in ("flip", "crop_flip", "rrc_flip") and bool(torch.rand((), generator=g) < 0.5):
            x = x.flip(-1)
        return (x - self.mean) / self.std


class _Streamed(torch.utils.data.Dataset):
    """``(input, label, index)`` of a folder stream, optionally restricted to ``indices`` (kept order)."""

    def __init__(self, stream: Any, transform: _Transform, indices: np.ndarray | None = None) -> None:
        self.stream, self.transform, self.epoch = stream, transform, 0
        self.indices = None if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.stream) if self.indices is None else int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        index = int(i if self.indices is None else self.indices[i])
        img, label, index = self.stream[index]
        return self.transform(img, self.epoch, index), label, index


def _gather_rows(rows: torch.Tensor, world: int) -> torch.Tensor:
    """all_gather of a (n_rank, k) float64 tensor whose n differs across ranks."""
    n = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    top = int(max(s.item() for s in sizes))
    padded = torch.zeros(top, rows.shape[1], dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]] = rows
    bufs = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded)
    return torch.cat([b[: int(s.item())] for b, s in zip(bufs, sizes)]).cpu()


def _read_result(out: Path, cfg: DDPConfig) -> dict[str, Any] | None:
    from harness.io import read_meta_json

    f = out / RESULT
    if not f.is_file():
        return None
    res = read_meta_json(f, RESULT_FORMAT)
    return res if res.get("config") == asdict(cfg) else None


class _State:
    """What the recorder's checkpoint hook saves: model, optimiser, the next epoch and the config."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, cfg: DDPConfig) -> None:
        self.model, self.opt, self.cfg, self.epoch, self.train_acc = model, opt, cfg, 0, float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "epoch": self.epoch,
                "train_acc": self.train_acc, "config": asdict(self.cfg)}


def _save_checkpoint(out: Path, state: _State) -> None:
    tmp = out / f".{CHECKPOINT}.tmp"
    torch.save(state.state_dict(), tmp)
    os.replace(tmp, out / CHECKPOINT)


def _evaluate(model: torch.nn.Module, cfg: DDPConfig, classes: list[str], rank: int, world: int,
              device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[int, int]:
    """(correct, total) on ``cfg.test_root``: each rank takes every ``world``-th image, counts are summed."""
    from torch.utils.data import DataLoader

    from harness.data import ImageFolderStream

    test = ImageFolderStream(cfg.test_root, classes=classes)
    mine = np.arange(rank, len(test), world)
    ds = _Streamed(test, _Transform(cfg.img_size, mean, std, "eval", cfg.seed), mine)
    loader = DataLoader(ds, batch_size=max(cfg.batch_size, 64), num_workers=cfg.num_workers)
    model.eval()
    correct = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.inference_mode():
        for x, y, _ in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            correct[0] += float((pred == y).sum())
            correct[1] += float(y.numel())
    dist.all_reduce(correct)
    return int(correct[0].item()), int(correct[1].item())


def train_ddp(rank: int, world_size: int, cfg: DDPConfig, init_method: str = "env://",
              stop_after: int | None = None) -> dict[str, Any] | None:
    """Train under DDP on ``cfg.root``; rank 0 writes the dynamics / checkpoint / ``result.json``.

    ``stop_after`` ends the process after that many epochs of this call (tests: a kill between epochs).
    Returns the result on rank 0 (None on the others, and when stopped early).
    """
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader, DistributedSampler

    from harness.data import ImageFolderStream, read_classlist
    from harness.data.specs import IMAGENET_MEAN, IMAGENET_STD
    from harness.engine.protocol import TrainProtocol
    from harness.engine.trainer import scheduled_lr, seeded_model
    from harness.io import atomic_write_json
    from harness.models import create_model

    out = Path(cfg.out)
    dist.init_process_group(cfg.backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        done = _read_result(out, cfg)
        if done is not None:
            return done if rank == 0 else None
        use_cuda = cfg.backend == "nccl" and torch.cuda.is_available()
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        stream = ImageFolderStream(cfg.root, classes=read_classlist(cfg.classlist) if cfg.classlist else None)
        n_all, k = len(stream), len(stream.classes)
        kept = np.load(cfg.subset) if cfg.subset else None
        if kept is not None and (kept.ndim != 1 or kept.size == 0 or kept.min() < 0 or kept.max() >= n_all):
            raise ConfigError(f"{cfg.subset}: expected a non-empty 1-D array of indices in [0, {n_all})")
        ds = _Streamed(stream, _Transform(cfg.img_size, IMAGENET_MEAN, IMAGENET_STD, cfg.augment, cfg.seed), kept)
        n = len(ds)
        sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed)
        model = seeded_model(lambda: create_model(cfg.model, num_classes=k, in_chans=3, img_size=cfg.img_size),
                             cfg.seed).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
        proto = TrainProtocol("ddp", model=cfg.model, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                         schedule=cfg.schedule, eta_min=cfg.eta_min, iterations=cfg.iterations or None)
        state = _State(model, opt, cfg)
        rec = None
        meta = {**asdict(cfg), "world_size": world_size, "classes": stream.classes,
                "order": "dataset (ImageFolderStream index)"}
        if rank == 0 and cfg.record:
            from harness.dynamics import DynamicsRecorder

            rec = DynamicsRecorder(n_all, k, out_dir=out, meta=meta, labels=stream.targets.numpy(), checkpoint=True)
        out.mkdir(parents=True, exist_ok=True)
        start = torch.zeros(1, dtype=torch.long, device=device)
        if rank == 0 and (out / CHECKPOINT).is_file():
            ck = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
            if ck.get("config") != asdict(cfg):
                raise ConfigError(f"{out / CHECKPOINT}: a checkpoint of another run; use another --out or delete it")
            start[0] = int(ck["epoch"])
            if rec is not None:
                if int(ck["epoch"]) == rec.epochs_done + 1:  # killed after the checkpoint, before the commit
                    rec.commit_epochs(int(ck["epoch"]))
                elif int(ck["epoch"]) != rec.epochs_done:
                    raise ConfigError(f"{out}: checkpoint at epoch {ck['epoch']}, dynamics at {rec.epochs_done}")
        elif rec is not None and rec.epochs_done > 0:
            raise ConfigError(f"{out}: {rec.epochs_done} epochs recorded but {CHECKPOINT} is missing; delete it")
        dist.broadcast(start, 0)  # rank 0 decided where to start; every rank loads that checkpoint
        start_epoch = int(start.item())
        if start_epoch > 0:
            ck = torch.load(out / CHECKPOINT, map_location=device, weights_only=True)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            state.train_acc = float(ck.get("train_acc", float("nan")))
        ddp = DDP(model, device_ids=[device.index] if use_cuda else None)
        steps_per_epoch = math.ceil(n / world_size / cfg.batch_size)  # = ceil(ceil(n / world) / batch) per rank
        steps_total = cfg.iterations or cfg.epochs * steps_per_epoch
        epochs_total = math.ceil(steps_total / steps_per_epoch)
        for epoch in range(start_epoch, epochs_total):
            if stop_after is not None and epoch - start_epoch >= stop_after:
                return None
            sampler.set_epoch(epoch)
            ds.epoch = epoch  # workers are re-created each epoch, so they see it
            loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                                pin_memory=use_cuda)
            ddp.train()
            hits = torch.zeros(2, dtype=torch.float64, device=device)  # this rank's (correct, seen), summed at the end
            for i, (x, y, idx) in enumerate(loader):
                if epoch * steps_per_epoch + i >= steps_total:  # an iteration budget ends inside its last pass
                    break
                lr = scheduled_lr(proto, epoch, epoch * steps_per_epoch + i, steps_total, cfg.lr)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = ddp(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                hits[0] += (logits.detach().argmax(1) == y).sum()
                hits[1] += y.numel()  # a cut-short last pass sees fewer than sampler.total_size
                if cfg.record:  # every rank's batch, (sum B, 2 + C); only dynamics runs pay for the gather
                    rows = torch.cat([idx.double().to(device)[:, None], y.double()[:, None],
                                      logits.detach().double()], 1)
                    allrows = _gather_rows(rows, world_size)
                    if rec is not None:  # DistributedSampler pads with repeats: same sample, same epoch
                        rec.on_batch(epoch, allrows[:, 0].long(), allrows[:, 2:].float(), allrows[:, 1].long())
            dist.all_reduce(hits)
            state.epoch, state.train_acc = epoch + 1, float(hits[0].item()) / max(float(hits[1].item()), 1.0)
            if rec is not None:
                rec.on_epoch_end(epoch, state)  # rows, then checkpoint, then the commit
            elif rank == 0:
                _save_checkpoint(out, state)
            dist.barrier()
        result: dict[str, Any] = {"format": RESULT_FORMAT, "config": asdict(cfg), "world_size": world_size,
                                  "n_train": n, "n_folder": n_all, "classes": stream.classes,
                                  "last_epoch_train_acc": state.train_acc, "optimizer_steps": steps_total}
        if cfg.test_root:
            for b in model.buffers():  # BN statistics: rank 0's, so every rank evaluates the same model
                dist.broadcast(b, 0)
            c, t = _evaluate(model, cfg, stream.classes, rank, world_size, device, IMAGENET_MEAN, IMAGENET_STD)
            result.update({"test_correct": c, "n_test": t, "test_accuracy": c / max(t, 1)})  # a fraction
        if rank == 0:
            if rec is not None:
                rec.finish()
            atomic_write_json(out / RESULT, result)
            return result
        return None
    finally:
        dist.barrier()
        dist.destroy_process_group()


def _spawn_entry(rank: int, world_size: int, cfg: DDPConfig, init_method: str, stop_after: int | None) -> None:
    torch.set_num_threads(1)
    train_ddp(rank, world_size, cfg, init_method, stop_after)


def spawn_local(cfg: DDPConfig, world_size: int = 2, stop_after: int | None = None) -> Path:
    """Run :func:`train_ddp` in ``world_size`` local processes (gloo on CPU); returns ``cfg.out``."""
    import torch.multiprocessing as tmp_mp

    with tempfile.TemporaryDirectory() as d:
        init = f"file://{Path(d) / 'rendezvous'}"
        tmp_mp.spawn(_spawn_entry, args=(world_size, cfg, init, stop_after), nprocs=world_size, join=True)
    return Path(cfg.out)


def cli_args(cfg: DDPConfig) -> list[str]:
    """The ``python -m harness.engine.distributed`` arguments that rebuild ``cfg``."""
    args: list[str] = []
    for f in fields(DDPConfig):
        args += [f"--{f.name.replace('_', '-')}", str(getattr(cfg, f.name))]
    return args


def launch(cfg: DDPConfig, nproc: int = 1, *, log: Any = None) -> dict[str, Any]:
    """Run ``cfg`` under ``torchrun --standalone --nproc_per_node nproc`` and return its ``result.json``.

    The child's output goes to ``log`` (a path; default: ``<out>.log``) so a failure names the file
    to read.
    """
    done = _read_result(Path(cfg.out), cfg)
    if done is not None:
        return done
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    log_path = Path(log or f"{cfg.out.rstrip('/')}.log")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "harness.engine.distributed", *cli_args(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with open(log_path, "ab") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    res = _read_result(Path(cfg.out), cfg)
    if rc != 0 or res is None:
        raise DDBenchError(f"DDP run failed (exit {rc}): {' '.join(cmd[:8])} ...; see {log_path}")
    return res


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes"):
        return True
    if s.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: ``torchrun --nproc_per_node N -m harness.engine.distributed --root ... --out ...``."""
    ap = argparse.ArgumentParser(prog="python -m harness.engine.distributed")
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    for f in fields(DDPConfig):
        if f.name not in ("root", "out"):
            kind = _parse_bool if isinstance(f.default, bool) else type(f.default)
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    a = ap.parse_args(argv)
    cfg = DDPConfig(**{f.name: getattr(a, f.name) for f in fields(DDPConfig)})
    given = argv if argv is not None else sys.argv[1:]
    if cfg.backend == "gloo" and torch.cuda.is_available() and "--backend" not in given:
        cfg = DDPConfig(**{**asdict(cfg), "backend": "nccl"})
    train_ddp(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
