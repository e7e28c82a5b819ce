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
  (``test_accuracy`` in [0, 1], like every other cell; reports print percent). With a protocol's
  ``iterations`` it runs exactly that many global optimiser steps (CCS / DUAL ImageNet: 300 000), through
  as many passes over the kept images as it takes, the last one cut short, the schedule laid over those steps.

What is trained is a :class:`harness.engine.TrainProtocol` (:class:`DDPConfig` = protocol + I/O): its loss,
schedule (:class:`harness.engine.schedules.ScheduledSGD`, the optimiser of every trainer) and augmentation
(the streamed form in :mod:`harness.augment`) come from the same registries as the in-memory trainers'.

Every epoch ends with an atomic ``<out>/checkpoint.pt`` (model, optimiser, epoch); a killed run started
again with the same config resumes from it, bit for bit: the sampler order is a function of
``(seed, epoch)`` and each image's augmentation of ``(seed, epoch, index)``, whatever the number of
workers. A finished run (``result.json`` with the same config) returns at once.

Run with torchrun::

    torchrun --nproc_per_node 8 -m harness.distributed --protocol ccs-imagenet \
        --root /data/imagenet/train --out DIR --img-size 224 ...

(``--protocol``: a preset name or a JSON object of ``TrainProtocol`` fields, as :func:`cli_args` writes it)

or in-process on CPU with :func:`spawn_local` (the tests use two gloo processes); the coreset flow
launches it through :func:`launch` (``harness.pruning.stream_coreset``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from harness.augment import create_stream_augment, eval_view
from harness.data import ImageFolderStream, read_classlist
from harness.data.specs import IMAGENET_MEAN, IMAGENET_STD
from harness.dynamics import DynamicsRecorder
from harness.engine.losses import batch_loss, get_loss
from harness.engine.protocol import TrainProtocol, create_protocol
from harness.engine.schedules import ScheduledSGD
from harness.engine.trainer import seeded_model
from harness.errors import ConfigError, DDBenchError
from harness.io import atomic_write_json, read_meta_json, stable_json
from harness.models import create_model

RESULT = "result.json"
RESULT_FORMAT = "ddbench.ddp-result"
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class DDPConfig:
    """One DDP training run: a :class:`harness.engine.TrainProtocol` (what is computed) plus where the images
    are and where the results go.

    The protocol is the paper's: ``batch_size`` is the **global** batch (split evenly over the ranks),
    ``epochs`` / ``iterations`` count global passes / optimiser steps, ``schedule`` and ``loss`` are the
    registered ones (:mod:`harness.engine.schedules`, :mod:`harness.engine.losses`), and ``augment`` names a
    streamed augmentation (:func:`harness.augment.create_stream_augment`: ``none`` (shorter side to
    ``img_size``, centre crop), ``flip``, ``crop_flip`` (pad ``img_size // 8``, random crop, flip: the CIFAR
    recipe) or ``rrc_flip`` (random-resized crop + flip: the ImageNet recipe)). What streamed training cannot
    do is refused: an augmentation without a streamed form, CutMix, soft-label losses (folders have hard
    labels), loss weightings. ``precision`` bf16 runs the forward pass under bf16 autocast (the loss in fp32),
    as the sequential trainer does. Test images: shorter side ``img_size / 0.875``, centre crop.

    I/O: ``root`` (training image folder), ``out`` (dynamics / checkpoint / result), ``img_size``,
    ``num_workers`` (DataLoader workers per rank; the numbers do not depend on it), ``seed`` (init, order,
    augmentation), ``backend`` (gloo | nccl), ``classlist`` (a classlist name or file; "" = every class
    folder), ``record`` (per-sample dynamics; whole folder, whole epochs), ``subset`` (.npy of the training
    indices to train on; "" = all), ``test_root`` (folder to report the final accuracy on; "" = none),
    ``until_epoch`` (a dynamics run: train and record only the first ``until_epoch`` epochs, on the whole
    protocol's schedule, so the rows are a full run's first rows; 0 = the whole protocol). ``until_epoch`` is
    not part of the run's identity (:meth:`identity`): a longer request resumes a cut run from its checkpoint.
    """

    protocol: TrainProtocol
    root: str
    out: str
    img_size: int = 32
    num_workers: int = 2
    seed: int = 0
    backend: str = "gloo"
    classlist: str = ""
    record: bool = True
    subset: str = ""
    test_root: str = ""
    until_epoch: int = 0

    def __post_init__(self) -> None:
        p = self.protocol
        if not isinstance(p, TrainProtocol):
            raise ConfigError(f"ddp: protocol must be a TrainProtocol, got {type(p).__name__}")
        create_stream_augment(p.augment)  # ConfigError: no streamed form
        unsupported = {"cutmix": p.cutmix_p > 0, f"loss {p.loss} (folders have hard labels)":
                       get_loss(p.loss).targets != "hard",
                       f"loss_weighting {p.loss_weighting}": p.loss_weighting != "none"}
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ConfigError(f"protocol {p.name}: {', '.join(bad)} not supported on streamed data")
        if self.record and self.subset:
            raise ConfigError("ddp: record=True needs the whole training folder; drop --subset or --record")
        if self.img_size < 1 or self.num_workers < 0:
            raise ConfigError("ddp: img_size must be >= 1 and num_workers >= 0")
        if self.until_epoch < 0 or (self.until_epoch and not self.record):
            raise ConfigError(f"ddp: until_epoch={self.until_epoch}: expected 0 (the whole protocol) or a positive "
                              "number of epochs of a dynamics run (record=True)")
        if self.record and p.iterations is not None:
            raise ConfigError(f"protocol {p.name}: a dynamics run (record=True) needs whole epochs; drop iterations")

    def as_dict(self) -> dict[str, Any]:
        """JSON-normal (as it reads back from ``result.json``): the protocol's ``as_dict`` and the I/O fields."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["protocol"] = self.protocol.as_dict()
        return json.loads(stable_json(d))

    def identity(self) -> dict[str, Any]:
        """What a checkpoint and a result must match to be resumed or reused: ``as_dict`` without ``until_epoch``."""
        d = self.as_dict()
        d.pop("until_epoch")
        return d

    def same_run(self, recorded: Any) -> bool:
        """Whether ``recorded`` (the config a checkpoint or result saved) is this run, whatever its ``until_epoch``."""
        if not isinstance(recorded, dict):
            return False
        return {k: v for k, v in recorded.items() if k != "until_epoch"} == self.identity()

    def target_epochs(self, epochs_total: int) -> int:
        """The epochs this call trains to: ``until_epoch`` if set (at most the protocol's), else all."""
        return min(self.until_epoch, epochs_total) if self.until_epoch else epochs_total


# --- per-sample views (picklable for workers; randomness from (seed, epoch, index)) ---------------------
class StreamTransform:
    """One streamed image -> its normalized training view (the protocol's streamed augmentation) or its test
    view (``augment="eval"``). The generator is seeded by ``(seed, epoch, index)``: a view does not depend on
    the worker, the rank or the number of workers (bit-for-bit resume)."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...], augment: str, seed: int) -> None:
        self.size, self.augment, self.seed = size, augment, seed
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        self.view = None if augment == "eval" else create_stream_augment(augment)

    def __call__(self, img: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        x = img.float() / 255
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 2_147_483_647 + index)
        x = eval_view(x, self.size) if self.view is None else self.view(x, g, self.size)
        return (x - self.mean) / self.std


class _Streamed(torch.utils.data.Dataset):
    """``(input, label, index)`` of a folder stream, optionally restricted to ``indices`` (kept order)."""

    def __init__(self, stream: Any, transform: StreamTransform, indices: np.ndarray | None = None) -> None:
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
    f = out / RESULT
    if not f.is_file():
        return None
    res = read_meta_json(f, RESULT_FORMAT)
    if not cfg.same_run(res.get("config")):
        return None
    total = int(res.get("epochs_total", 0))
    trained = int(res.get("epochs_trained", total))
    return res if not total or trained >= cfg.target_epochs(total) else None  # older results: whole runs


class _State:
    """What the recorder's checkpoint hook saves: model, optimiser, the next epoch and the config."""

    def __init__(self, model: torch.nn.Module, sgd: ScheduledSGD, cfg: DDPConfig) -> None:
        self.model, self.sgd, self.cfg, self.epoch, self.train_acc = model, sgd, cfg, 0, float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.sgd.state_dict(), "epoch": self.epoch,
                "train_acc": self.train_acc, "config": self.cfg.as_dict()}


def _save_checkpoint(out: Path, state: _State) -> None:
    tmp = out / f".{CHECKPOINT}.tmp"
    torch.save(state.state_dict(), tmp)
    os.replace(tmp, out / CHECKPOINT)


def _evaluate(model: torch.nn.Module, cfg: DDPConfig, classes: list[str], rank: int, world: int,
              device: torch.device, batch: int) -> tuple[int, int]:
    """(correct, total) on ``cfg.test_root``: each rank takes every ``world``-th image, counts are summed."""
    test = ImageFolderStream(cfg.test_root, classes=classes)
    mine = np.arange(rank, len(test), world)
    ds = _Streamed(test, StreamTransform(cfg.img_size, IMAGENET_MEAN, IMAGENET_STD, "eval", cfg.seed), mine)
    loader = DataLoader(ds, batch_size=max(batch, 64), num_workers=cfg.num_workers)
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
    """Train ``cfg.protocol`` under DDP on ``cfg.root``; rank 0 writes the dynamics / checkpoint / ``result.json``.

    Each rank takes ``batch_size / world_size`` images per step; the schedule, the optimiser (a fresh one where
    the schedule says so, e.g. VICO's halving) and the loss are the registered ones every trainer uses.
    ``stop_after`` ends the process after that many epochs of this call (tests: a kill between epochs).
    Returns the result on rank 0 (None on the others, and when stopped early).
    """
    p = cfg.protocol
    if p.batch_size % world_size:
        raise ConfigError(f"protocol {p.name}: batch_size {p.batch_size} does not split over {world_size} processes")
    batch = p.batch_size // world_size  # per rank
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
        ds = _Streamed(stream, StreamTransform(cfg.img_size, IMAGENET_MEAN, IMAGENET_STD, p.augment, cfg.seed), kept)
        n = len(ds)
        sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed)
        model = seeded_model(lambda: create_model(p.model, num_classes=k, in_chans=3, img_size=cfg.img_size),
                             cfg.seed).to(device)
        steps_per_epoch = math.ceil(n / world_size / batch)  # = ceil(ceil(n / world) / batch) per rank
        steps_total = p.iterations or p.total_epochs * steps_per_epoch
        epochs_total = math.ceil(steps_total / steps_per_epoch)
        target = cfg.target_epochs(epochs_total)  # the schedule stays the whole protocol's (steps_total)
        autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if p.precision == "bf16"
                    else contextlib.nullcontext())
        sgd = ScheduledSGD(p, model.parameters(), steps_total)
        loss_fn = get_loss(p.loss)
        state = _State(model, sgd, cfg)
        rec = None
        meta = {**cfg.identity(), "world_size": world_size, "classes": stream.classes,
                "order": "dataset (ImageFolderStream index)"}
        out.mkdir(parents=True, exist_ok=True)
        start = torch.zeros(1, dtype=torch.long, device=device)

        def decide() -> int:
            """Rank 0: the epoch to start from, once the recorder and the checkpoint agree (else a DDBenchError)."""
            nonlocal rec
            if cfg.record:
                rec = DynamicsRecorder(n_all, k, out_dir=out, meta=meta, labels=stream.targets.numpy(), checkpoint=True)
            if not (out / CHECKPOINT).is_file():
                if rec is not None and rec.epochs_done > 0:
                    raise ConfigError(f"{out}: {rec.epochs_done} epochs recorded but {CHECKPOINT} is missing; "
                                      "delete it")
                return 0
            ck = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=True)
            if not cfg.same_run(ck.get("config")):
                raise ConfigError(f"{out / CHECKPOINT}: a checkpoint of another run; use another --out or delete it")
            if rec is not None:
                if int(ck["epoch"]) == rec.epochs_done + 1:  # killed after the checkpoint, before the commit
                    rec.commit_epochs(int(ck["epoch"]))
                elif int(ck["epoch"]) != rec.epochs_done:
                    raise ConfigError(f"{out}: checkpoint at epoch {ck['epoch']}, dynamics at {rec.epochs_done}")
            return int(ck["epoch"])

        problem: list[str | None] = [None]
        if rank == 0:
            try:
                start[0] = decide()
            except DDBenchError as e:
                problem[0] = str(e)
        dist.broadcast_object_list(problem, src=0)  # every rank raises rank 0's error (none waits for a peer)
        if problem[0] is not None:
            raise ConfigError(problem[0])
        dist.broadcast(start, 0)  # rank 0 decided where to start; every rank loads that checkpoint
        start_epoch = int(start.item())
        if start_epoch > 0:
            ck = torch.load(out / CHECKPOINT, map_location=device, weights_only=True)
            model.load_state_dict(ck["model"])
            sgd.load_state_dict(ck["optimizer"])  # the lr and momentum of the epoch boundary it was saved at
            state.train_acc = float(ck.get("train_acc", float("nan")))
        ddp = DDP(model, device_ids=[device.index] if use_cuda else None)
        for epoch in range(start_epoch, target):
            if stop_after is not None and epoch - start_epoch >= stop_after:
                return None
            sampler.set_epoch(epoch)
            ds.epoch = epoch  # workers are re-created each epoch, so they see it
            loader = DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=cfg.num_workers,
                                pin_memory=use_cuda)
            ddp.train()
            hits = torch.zeros(2, dtype=torch.float64, device=device)  # this rank's (correct, seen), summed at the end
            step = epoch * steps_per_epoch
            for x, y, idx in loader:
                if step >= steps_total:  # an iteration budget ends inside its last pass
                    break
                sgd.begin_step(epoch, step)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast:
                    logits = ddp(x)
                loss = batch_loss(loss_fn, logits.float(), y)
                sgd.zero_grad()
                loss.backward()
                sgd.step()
                step += 1
                hits[0] += (logits.detach().argmax(1) == y).sum()
                hits[1] += y.numel()  # a cut-short last pass sees fewer than sampler.total_size
                if cfg.record:  # every rank's batch, (sum B, 2 + C); only dynamics runs pay for the gather
                    rows = torch.cat([idx.double().to(device)[:, None], y.double()[:, None],
                                      logits.detach().double()], 1)
                    allrows = _gather_rows(rows, world_size)
                    if rec is not None:  # DistributedSampler pads with repeats: same sample, same epoch
                        rec.on_batch(epoch, allrows[:, 0].long(), allrows[:, 2:].float(), allrows[:, 1].long())
            dist.all_reduce(hits)
            sgd.end_epoch(epoch, step)  # e.g. VICO: lr x0.1 with a fresh optimiser (before the checkpoint)
            state.epoch, state.train_acc = epoch + 1, float(hits[0].item()) / max(float(hits[1].item()), 1.0)
            if rec is not None:
                rec.on_epoch_end(epoch, state)  # rows, then checkpoint, then the commit
            elif rank == 0:
                _save_checkpoint(out, state)
            dist.barrier()
        result: dict[str, Any] = {"format": RESULT_FORMAT, "config": cfg.as_dict(), "world_size": world_size,
                                  "n_train": n, "n_folder": n_all, "classes": stream.classes,
                                  "last_epoch_train_acc": state.train_acc, "optimizer_steps": steps_total,
                                  "epochs_total": epochs_total, "epochs_trained": max(start_epoch, target)}
        if cfg.test_root:
            for b in model.buffers():  # BN statistics: rank 0's, so every rank evaluates the same model
                dist.broadcast(b, 0)
            with autocast:
                c, t = _evaluate(model, cfg, stream.classes, rank, world_size, device, batch)
            result.update({"test_correct": c, "n_test": t, "test_accuracy": c / max(t, 1)})  # a fraction
        if rank == 0:
            if rec is not None and max(start_epoch, target) >= epochs_total:
                rec.finish()
            atomic_write_json(out / RESULT, result)
            return result
        return None
    except BaseException:  # no barrier: the other ranks may be waiting in another collective; leaving the group
        dist.destroy_process_group()  # (and the process) ends their wait, and the launcher reports this error
        raise
    finally:
        if dist.is_initialized():  # a normal return: every rank reaches this barrier
            dist.barrier()
            dist.destroy_process_group()


def _spawn_entry(rank: int, world_size: int, cfg: DDPConfig, init_method: str, stop_after: int | None) -> None:
    torch.set_num_threads(1)
    train_ddp(rank, world_size, cfg, init_method, stop_after)


def spawn_local(cfg: DDPConfig, world_size: int = 2, stop_after: int | None = None) -> Path:
    """Run :func:`train_ddp` in ``world_size`` local processes (gloo on CPU); returns ``cfg.out``."""
    with tempfile.TemporaryDirectory() as d:
        init = f"file://{Path(d) / 'rendezvous'}"
        tmp_mp.spawn(_spawn_entry, args=(world_size, cfg, init, stop_after), nprocs=world_size, join=True)
    return Path(cfg.out)


def cli_args(cfg: DDPConfig) -> list[str]:
    """The ``python -m harness.distributed`` arguments that rebuild ``cfg`` (the protocol as JSON)."""
    args = ["--protocol", stable_json(cfg.protocol.as_dict())]
    for f in fields(DDPConfig):
        if f.name != "protocol":
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
           "-m", "harness.distributed", *cli_args(cfg)]
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


def _protocol_arg(text: str) -> TrainProtocol:
    """``--protocol``: a JSON object of :class:`TrainProtocol` fields (what :func:`cli_args` writes), or a preset
    name (its CIFAR-10 form)."""
    if text.lstrip().startswith("{"):
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"--protocol: not a JSON object ({e})") from None
        d["milestones"] = tuple(d.get("milestones", ()))
        try:
            return TrainProtocol(**d)
        except TypeError as e:
            raise argparse.ArgumentTypeError(f"--protocol: {e}") from None
    return create_protocol(text)


def main(argv: list[str] | None = None) -> int:
    """torchrun entry point: ``torchrun --nproc_per_node N -m harness.distributed --protocol ... --root ...
    --out ...``."""
    ap = argparse.ArgumentParser(prog="python -m harness.distributed")
    ap.add_argument("--protocol", required=True, type=_protocol_arg,
                    help="TrainProtocol fields as a JSON object, or a preset name")
    ap.add_argument("--root", required=True)
    ap.add_argument("--out", required=True)
    for f in fields(DDPConfig):
        if f.name not in ("protocol", "root", "out"):
            kind = _parse_bool if isinstance(f.default, bool) else type(f.default)
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    a = ap.parse_args(argv)
    values = {f.name: getattr(a, f.name) for f in fields(DDPConfig)}
    given = argv if argv is not None else sys.argv[1:]
    if values["backend"] == "gloo" and torch.cuda.is_available() and "--backend" not in given:
        values["backend"] = "nccl"
    train_ddp(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), DDPConfig(**values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
