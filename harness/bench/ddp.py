"""Data-parallel training on streamed image folders with per-sample statistics gathered from all ranks.

ImageNet-scale coreset cells stream ``(image, label, index)`` from :class:`harness.data.ImageFolderStream`
with DataLoader workers, one process per GPU under ``torchrun`` (NCCL) or several CPU processes
(gloo). After every step the ranks ``all_gather`` their ``(index, label, logits)`` rows and rank 0
feeds them to one :class:`harness.dynamics.DynamicsRecorder`, so ``<out>`` is an ordinary dynamics
directory (docs/dynamics.md), index-aligned in dataset order whatever the sampler, worker or rank,
written epoch by epoch; every score reads it like any other run.

Run with torchrun::

    torchrun --nproc_per_node 8 -m harness.bench.ddp --root /data/imagenet/train --out DIR --model resnet34 ...

or in-process on CPU with :func:`spawn_local` (the tests use two gloo processes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass(frozen=True)
class DDPConfig:
    root: str
    out: str
    model: str = "resnet18_cifar"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    img_size: int = 32
    num_workers: int = 2
    seed: int = 0
    backend: str = "gloo"


class _ToInput:
    """uint8 (C, H, W) -> float normalized (C, S, S) (a picklable transform for workers)."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.size, self.mean, self.std = size, torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        x = img.float() / 255
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        return (x - self.mean) / self.std


def _gather_rows(rows: torch.Tensor, world: int) -> torch.Tensor:
    """all_gather of a (n_rank, k) float64 tensor whose n differs across ranks."""
    n = torch.tensor([rows.shape[0]], dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    top = int(max(s.item() for s in sizes))
    padded = torch.zeros(top, rows.shape[1], dtype=rows.dtype)
    padded[: rows.shape[0]] = rows
    bufs = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(bufs, padded)
    return torch.cat([b[: int(s.item())] for b, s in zip(bufs, sizes)])


def train_ddp(rank: int, world_size: int, cfg: DDPConfig, init_method: str = "env://") -> dict[str, float] | None:
    """Train under DDP on ``cfg.root`` and write index-aligned per-sample stats (rank 0)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DataLoader, DistributedSampler

    from harness.data import ImageFolderStream
    from harness.data.specs import IMAGENET_MEAN, IMAGENET_STD
    from harness.models import create_model
    from harness.train import seeded_model

    dist.init_process_group(cfg.backend, init_method=init_method, rank=rank, world_size=world_size)
    try:
        use_cuda = cfg.backend == "nccl" and torch.cuda.is_available()
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        ds = ImageFolderStream(cfg.root, transform=_ToInput(cfg.img_size, IMAGENET_MEAN, IMAGENET_STD))
        n, k = len(ds), len(ds.classes)
        sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                            pin_memory=use_cuda, persistent_workers=cfg.num_workers > 0, generator=g)
        model = seeded_model(lambda: create_model(cfg.model, num_classes=k, in_chans=3, img_size=cfg.img_size),
                             cfg.seed).to(device)
        ddp = DDP(model, device_ids=[device.index] if use_cuda else None)
        opt = torch.optim.SGD(ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                              nesterov=True)
        steps_total = cfg.epochs * len(loader)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, steps_total) / max(steps_total, 1))))
        rec = None
        if rank == 0:
            from harness.dynamics import DynamicsRecorder

            meta = {**asdict(cfg), "world_size": world_size, "classes": ds.classes,
                    "order": "dataset (ImageFolderStream index)"}
            rec = DynamicsRecorder(n, k, out_dir=cfg.out, meta=meta, labels=ds.targets.numpy())
        for epoch in range(cfg.epochs):
            sampler.set_epoch(epoch)
            ddp.train()
            correct = 0.0
            for x, y, idx in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = ddp(x)
                per = F.cross_entropy(logits, y, reduction="none")
                opt.zero_grad(set_to_none=True)
                per.mean().backward()
                opt.step()
                sched.step()
                lg = logits.detach().double().cpu()
                rows = torch.cat([idx.double()[:, None], y.double().cpu()[:, None], lg], 1)
                allrows = _gather_rows(rows, world_size)  # every rank's batch, (sum B, 2 + C)
                if rec is not None:  # DistributedSampler pads with repeats: same sample, same epoch
                    rec.on_batch(epoch, allrows[:, 0].long(), allrows[:, 2:].float(), allrows[:, 1].long())
                    correct += float((allrows[:, 2:].argmax(1) == allrows[:, 1].long()).double().sum())
            if rec is not None:
                rec.on_epoch_end(epoch, None)
        if rec is not None:
            return {"n": float(n), "last_epoch_acc": correct / n}
        return None
    finally:
        dist.barrier()
        dist.destroy_process_group()


def _spawn_entry(rank: int, world_size: int, cfg: DDPConfig, init_method: str) -> None:
    torch.set_num_threads(1)
    train_ddp(rank, world_size, cfg, init_method)


def spawn_local(cfg: DDPConfig, world_size: int = 2) -> Path:
    """Run :func:`train_ddp` in ``world_size`` local processes (gloo on CPU); returns ``cfg.out``."""
    import torch.multiprocessing as tmp_mp

    with tempfile.TemporaryDirectory() as d:
        init = f"file://{Path(d) / 'rendezvous'}"
        tmp_mp.spawn(_spawn_entry, args=(world_size, cfg, init), nprocs=world_size, join=True)
    return Path(cfg.out)


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: ``torchrun --nproc_per_node N -m harness.bench.ddp --root ... --out ...``."""
    ap = argparse.ArgumentParser(prog="python -m harness.bench.ddp")
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    for f in DDPConfig.__dataclass_fields__.values():
        if f.name not in ("root", "out"):
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    a = ap.parse_args(argv)
    cfg = DDPConfig(**{k: getattr(a, k) for k in DDPConfig.__dataclass_fields__})
    if cfg.backend == "gloo" and torch.cuda.is_available() and "--backend" not in (argv or []):
        cfg = DDPConfig(**{**asdict(cfg), "backend": "nccl"})
    train_ddp(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
