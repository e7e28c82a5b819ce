"""A reference-style evaluator, written the way VICO's ``utils.py:evaluate_synset`` works.

**This module exists only as a benchmark baseline** (``benchmarks/test_bench_eval.py``, issue 7): it
lets us measure :func:`harness.evaluate.evaluate` against the way the reference code spends its
time, on the same data in the same process. Use :func:`harness.evaluate.evaluate` for real evaluations.

What it copies from the reference (DC/DSA/DM's ``evaluate_synset``, ``epoch`` and ``DiffAugment``):

- sequential models; per run a ``DataLoader(TensorDataset(images, labels), batch_size, shuffle=True)``
  built afresh, so every batch is collated sample by sample;
- ``epochs + 1`` epochs, lr x0.1 with a fresh SGD after epoch ``epochs // 2 + 1``;
- per batch: ``.float().to(device)``, augmentation, forward, ``loss.item()`` and a numpy argmax for the
  running accuracy (two host round trips per step), ``zero_grad()``, backward, step;
- ``DiffAugment`` as in the reference: ``set_seed_DiffAug`` called before every draw (it re-seeds
  the global RNG and bumps ``latestseed`` in siamese mode; in evaluation ``seed=-1`` so it returns),
  the op group chosen with ``torch.randint(...).item()``, and the scale/rotate ``theta`` built as a
  Python list comprehension over the samples, then ``torch.tensor(theta)`` on the host;
- the test pass through a ``DataLoader`` of batch 256 with the same ``epoch`` function (no
  ``no_grad``), accuracy by numpy.

Deviations, for determinism only: the shuffling ``DataLoader`` gets a generator seeded per run and
the global RNG (which the reference's DSA draws from) is seeded per run inside ``fork_rng``; the model
init comes from :func:`harness.engine.seeded_model` (the same inits as ours); DC augmentation (MNIST in
``vico-dc``) uses :class:`harness.augment.DCAugment` instead of the reference's per-image scipy code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.augment import DCAugment
from harness.data.images import LabeledImages
from harness.engine.protocol import TrainProtocol
from harness.engine.trainer import seeded_model
from harness.errors import ConfigError
from harness.evaluate import EvalResult, model_inputs
from harness.models import create_model

__all__ = ["ParamDiffAug", "diff_augment", "evaluate_reference"]


@dataclass
class ParamDiffAug:
    """The reference's ``ParamDiffAug`` (mutable: ``latestseed`` and ``Siamese`` change per call)."""

    aug_mode: str = "S"
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    Siamese: bool = False  # noqa: N815 - the reference's spelling
    latestseed: int = -1


def set_seed_diffaug(param: ParamDiffAug) -> None:
    if param.latestseed == -1:
        return
    torch.random.manual_seed(param.latestseed)
    param.latestseed += 1


def rand_scale(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    ratio = param.ratio_scale
    set_seed_diffaug(param)
    sx = torch.rand(x.shape[0]) * (ratio - 1.0 / ratio) + 1.0 / ratio
    set_seed_diffaug(param)
    sy = torch.rand(x.shape[0]) * (ratio - 1.0 / ratio) + 1.0 / ratio
    theta = [[[sx[i], 0, 0], [0, sy[i], 0]] for i in range(x.shape[0])]
    theta = torch.tensor(theta, dtype=torch.float)
    if param.Siamese:
        theta[:] = theta[0].clone()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.device)
    return F.grid_sample(x, grid, align_corners=False)


def rand_rotate(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    ratio = param.ratio_rotate
    set_seed_diffaug(param)
    theta = (torch.rand(x.shape[0]) - 0.5) * 2 * ratio / 180 * float(np.pi)
    theta = [[[torch.cos(theta[i]), torch.sin(-theta[i]), 0], [torch.sin(theta[i]), torch.cos(theta[i]), 0]]
             for i in range(x.shape[0])]
    theta = torch.tensor(theta, dtype=torch.float)
    if param.Siamese:
        theta[:] = theta[0].clone()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.device)
    return F.grid_sample(x, grid, align_corners=False)


def rand_flip(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    set_seed_diffaug(param)
    randf = torch.rand(x.size(0), 1, 1, 1, device=x.device)
    if param.Siamese:
        randf[:] = randf[0].clone()
    return torch.where(randf < param.prob_flip, x.flip(3), x)


def rand_brightness(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    set_seed_diffaug(param)
    randb = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    if param.Siamese:
        randb[:] = randb[0].clone()
    return x + (randb - 0.5) * param.brightness


def rand_saturation(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    x_mean = x.mean(dim=1, keepdim=True)
    set_seed_diffaug(param)
    rands = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    if param.Siamese:
        rands[:] = rands[0].clone()
    return (x - x_mean) * (rands * param.saturation) + x_mean


def rand_contrast(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    set_seed_diffaug(param)
    randc = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    if param.Siamese:
        randc[:] = randc[0].clone()
    return (x - x_mean) * (randc + param.contrast) + x_mean


def rand_crop(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    ratio = param.ratio_crop_pad
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    set_seed_diffaug(param)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    set_seed_diffaug(param)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    if param.Siamese:
        translation_x[:] = translation_x[0].clone()
        translation_y[:] = translation_y[0].clone()
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0), device=x.device),
                                                torch.arange(x.size(2), device=x.device),
                                                torch.arange(x.size(3), device=x.device), indexing="ij")
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)


def rand_cutout(x: torch.Tensor, param: ParamDiffAug) -> torch.Tensor:
    ratio = param.ratio_cutout
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    set_seed_diffaug(param)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    set_seed_diffaug(param)
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    if param.Siamese:
        offset_x[:] = offset_x[0].clone()
        offset_y[:] = offset_y[0].clone()
    grid_batch, grid_x, grid_y = torch.meshgrid(torch.arange(x.size(0), device=x.device),
                                                torch.arange(cutout_size[0], device=x.device),
                                                torch.arange(cutout_size[1], device=x.device), indexing="ij")
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    return x * mask.unsqueeze(1)


AUGMENT_FNS = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "crop": [rand_crop],
    "cutout": [rand_cutout],
    "flip": [rand_flip],
    "scale": [rand_scale],
    "rotate": [rand_rotate],
}


def diff_augment(x: torch.Tensor, strategy: str = "", seed: int = -1, param: ParamDiffAug | None = None
                 ) -> torch.Tensor:
    """The reference ``DiffAugment`` (global RNG; ``seed=-1``: per-sample, non-siamese)."""
    param = param or ParamDiffAug()
    param.Siamese = seed != -1
    param.latestseed = seed
    if strategy in ("", "None", "none"):
        return x
    if param.aug_mode == "M":
        for p in strategy.split("_"):
            for f in AUGMENT_FNS[p]:
                x = f(x, param)
    elif param.aug_mode == "S":
        pbties = strategy.split("_")
        set_seed_diffaug(param)
        p = pbties[torch.randint(0, len(pbties), size=(1,)).item()]
        for f in AUGMENT_FNS[p]:
            x = f(x, param)
    else:
        raise ConfigError(f"DiffAugment mode {param.aug_mode!r}: expected 'S' or 'M'")
    return x.contiguous()


def _epoch(mode: str, loader: DataLoader, net: nn.Module, optimizer: torch.optim.Optimizer | None,
           criterion: nn.Module, device: torch.device, protocol: TrainProtocol, aug: bool,
           dc: DCAugment | None, dc_gen: torch.Generator | None) -> tuple[float, float]:
    """The reference ``epoch``: running loss via ``.item()``, running accuracy via numpy."""
    loss_avg, acc_avg, num_exp = 0.0, 0, 0
    net.train() if mode == "train" else net.eval()
    for datum in loader:
        img = datum[0].float().to(device)
        if aug:
            if protocol.augment == "dsa":
                img = diff_augment(img, protocol.dsa_strategy, param=ParamDiffAug())
            elif dc is not None:
                img = dc(img, dc_gen)
        lab = datum[1].long().to(device)
        n_b = lab.shape[0]
        output = net(img)
        loss = criterion(output, lab)
        acc = np.sum(np.equal(np.argmax(output.cpu().data.numpy(), axis=-1), lab.cpu().data.numpy()))
        loss_avg += loss.item() * n_b
        acc_avg += int(acc)
        num_exp += n_b
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss_avg / num_exp, acc_avg / num_exp


def evaluate_reference(train: LabeledImages, test: LabeledImages, protocol: TrainProtocol, *, runs: int | None = None,
                       seed: int = 0, device: str | torch.device = "cpu", test_batch: int = 256) -> EvalResult:
    """VICO-style ``evaluate_synset`` for ``runs`` fresh models (benchmark baseline; see the module docstring)."""
    p = protocol
    if p.schedule != "vico_half" or p.cutmix_p > 0 or p.loss != "ce" or p.augment not in ("none", "dsa", "dc"):
        raise ConfigError(f"reference-style evaluator: protocol {p.name} is not a VICO evaluate_synset protocol "
                          "(needs schedule vico_half, hard labels, no CutMix, augmentation none|dsa|dc)")
    runs = runs or p.runs
    device = torch.device(device)
    x_train, x_test = model_inputs(train, test)
    images_train, labels_train = x_train.to(device), train.labels.to(device)
    accs, seeds = [], []
    for r in range(runs):
        s = seed + r
        net = seeded_model(lambda: create_model(p.model, num_classes=train.num_classes, in_chans=train.channels,
                                                img_size=train.size), s).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            lr = float(p.lr)
            epochs = int(p.epochs)
            lr_schedule = [epochs // 2 + 1]
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=p.momentum, weight_decay=p.weight_decay)
            criterion = nn.CrossEntropyLoss().to(device)
            dst_train = TensorDataset(images_train, labels_train)
            trainloader = DataLoader(dst_train, batch_size=p.batch_size, shuffle=True, num_workers=0,
                                     generator=torch.Generator().manual_seed(s))
            dc = DCAugment(p.dc_strategy) if p.augment == "dc" else None
            dc_gen = torch.Generator(device=device).manual_seed(s) if dc is not None else None
            for ep in range(p.total_epochs):
                _epoch("train", trainloader, net, optimizer, criterion, device, p, True, dc, dc_gen)
                if ep in lr_schedule:
                    lr *= 0.1
                    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=p.momentum,
                                                weight_decay=p.weight_decay)
            testloader = DataLoader(TensorDataset(x_test, test.labels), batch_size=test_batch, shuffle=False,
                                    num_workers=0)
            _, acc_test = _epoch("test", testloader, net, None, criterion, device, p, False, None, None)
        accs.append(float(acc_test))
        seeds.append(s)
    return EvalResult(tuple(accs), tuple(seeds), p.as_dict(), p.model, len(train), {"path": "reference-style"})
