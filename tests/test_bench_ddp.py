"""DDP path: two gloo CPU processes train on a tiny image folder; stats land index-aligned."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from harness.bench.ddp import DDPConfig, _ToInput, spawn_local
from harness.data import ImageFolderStream
from harness.data.specs import IMAGENET_MEAN, IMAGENET_STD
from harness.dynamics import STATS, Dynamics
from harness.models import create_model
from harness.train import seeded_model


def _folder(root, classes=3, per_class=7, size=12):
    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = (torch.rand(size, size, 3, generator=g) * 60 + 80 * c).clamp(0, 255).byte().numpy()
            Image.fromarray(arr).save(d / f"{i:03d}.png")
    return classes * per_class


def test_ddp_two_gloo_processes_gather_index_aligned_stats(tmp_path):
    n = _folder(tmp_path / "imgs")  # 21 samples: not divisible by 2 ranks x batch 4 (padding path)
    # lr 0: the model stays at its seeded init, so every gathered loss can be checked against a
    # single-process forward pass in dataset order (a misaligned index would show up as a mismatch)
    cfg = DDPConfig(root=str(tmp_path / "imgs"), out=str(tmp_path / "out"), model="convnet", epochs=2,
                    batch_size=4, lr=0.0, weight_decay=0.0, img_size=12, num_workers=1, seed=0, backend="gloo")
    spawn_local(cfg, world_size=2)
    dyn = Dynamics.open(tmp_path / "out")  # an ordinary dynamics directory, every scorer reads it
    assert dyn.n == n and dyn.epochs == 2 and dyn.meta["config"]["world_size"] == 2
    stats = {s: np.asarray(dyn.stat(s)) for s in STATS}
    for name, arr in stats.items():
        assert arr.shape == (2, n), name
        rows = arr[1:] if name == "kl_prev" else arr  # kl_prev is NaN at epoch 0 by definition
        assert np.isfinite(rows).all(), f"{name}: some sample missing from the gathered stats"
    assert set(np.unique(stats["correct"])) <= {0.0, 1.0}
    assert ((stats["target_prob"] > 0) & (stats["target_prob"] <= 1)).all()
    assert ((stats["logit_margin"] > 0) == (stats["correct"] == 1)).all()
    assert np.allclose(stats["kl_prev"][1], 0.0, atol=1e-5)  # lr 0: the same model both epochs
    assert (dyn.labels == ds_labels(cfg.root)).all()
    ds = ImageFolderStream(cfg.root, transform=_ToInput(12, IMAGENET_MEAN, IMAGENET_STD))
    model = seeded_model(lambda: create_model("convnet", num_classes=3, in_chans=3, img_size=12), 0)
    model.train()  # DDP records training-mode logits (instance norm: no running stats)
    with torch.no_grad():
        x = torch.stack([ds[i][0] for i in range(n)])
        loss = torch.nn.functional.cross_entropy(model(x), ds.targets, reduction="none").numpy()
    np.testing.assert_allclose(stats["loss"][0], loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["loss"][1], loss, rtol=1e-4, atol=1e-5)
    json.dumps(dyn.meta)


def ds_labels(root) -> np.ndarray:
    return ImageFolderStream(root).targets.numpy()
