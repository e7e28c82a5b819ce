"""pytest-benchmark: one DM iteration and one DC outer step on CIFAR-10 geometry (random tensors).

Geometry: 10 classes x 3 x 32 x 32, ConvNet-3 (width 128, instance norm), batch_real 256 per class,
ipc 10. "DC outer step" = one image update of DC (gradient matching over all 10 classes, one
backward through the second-order graph) without the inner network training, i.e. outer_loop = 1,
inner_loop = 1. Run: ``pytest benchmarks/test_bench_condense.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch

from adapters.condense import create_condenser
from adapters.condense.base import make_context, new_generator
from harness.data import LabeledImages

IPC = 10


@pytest.fixture(scope="module")
def cifar_like() -> LabeledImages:
    g = torch.Generator().manual_seed(0)
    n_per_class = 300
    images = torch.randint(0, 256, (10 * n_per_class, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    return LabeledImages(images=images, labels=labels, num_classes=10, mean=(0.4914, 0.4822, 0.4465),
                         std=(0.2023, 0.1994, 0.2010), name="cifar10:random")


def _setup(name: str, real: LabeledImages, **cfg):
    cond = create_condenser(name)
    config = cond.default_config(**cfg)
    ctx = make_context(real, IPC, config, "cifar10", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    syn = cond.init_synthetic(ctx, new_generator(ctx.device, 0)).detach().requires_grad_(True)
    return cond, ctx, syn, cond.optimizer(syn, ctx)


def test_dm_iteration(benchmark, cifar_like):
    cond, ctx, syn, opt = _setup("dm", cifar_like)
    it = iter(range(10**6))
    benchmark.pedantic(lambda: cond.step(ctx, syn, opt, new_generator(ctx.device, next(it)), 1),
                       rounds=2, iterations=1, warmup_rounds=0)


def test_dc_outer_step(benchmark, cifar_like):
    cond, ctx, syn, opt = _setup("dc", cifar_like, outer_loop=1, inner_loop=1)
    it = iter(range(10**6))
    benchmark.pedantic(lambda: cond.step(ctx, syn, opt, new_generator(ctx.device, next(it)), 1),
                       rounds=2, iterations=1, warmup_rounds=0)
