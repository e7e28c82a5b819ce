"""DC's evaluation augmentation (``vico-dc``: crop_scale_rotate on MNIST) against the authors' own code.

``utils.augment`` of ../shared/reference-code/DatasetCondensation (imported at run time, never copied) draws
its parameters from ``np.random``, one image at a time. Each test seeds numpy, replays those draws to get the
per-image parameters, runs the authors' function on a copy of the batch, and applies ours with the replayed
parameters: the outputs must agree to float32 rounding. Our rotation is checked against scipy directly too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import rotate as scipy_rotate

from harness.augment import DCAugment, DCDraws
from harness.rotate import prefilter_matrix, rotate_like_scipy

REPO = Path(__file__).resolve().parents[1]
REF = Path(os.environ.get("DDBENCH_REFCODE", REPO.parent / "shared" / "reference-code" / "DatasetCondensation"))
PARAM = {"crop": 4, "scale": 0.2, "rotate": 45, "noise": 0.001}


@pytest.fixture(scope="module")
def authors_augment():
    if not (REF / "utils.py").is_file():
        pytest.skip(f"the authors' code is not at {REF} (set DDBENCH_REFCODE)")
    if str(REF) not in sys.path:
        sys.path.insert(0, str(REF))
    import utils

    assert Path(utils.__file__).resolve().parent == REF.resolve(), utils.__file__
    return utils.augment


def _replay(seed: int, n: int, h: int, ops: list[str]) -> DCDraws:
    """The parameters ``utils.augment`` draws after ``np.random.seed(seed)``, in ``DCDraws`` form."""
    rs = np.random.RandomState(seed)
    choice, crop_r, crop_c, sh, sw, deg = (np.zeros(n, dtype=np.int64) for _ in range(6))
    sh[:], sw[:] = h, h  # an image that does not scale keeps a valid size (the op's result is not used)
    for i in range(n):
        op = rs.permutation(ops)[0]
        choice[i] = ops.index(op)
        if op == "crop":
            crop_r[i], crop_c[i] = rs.permutation(2 * PARAM["crop"])[0], rs.permutation(2 * PARAM["crop"])[0]
        elif op == "scale":
            sh[i] = int(rs.uniform(1 - PARAM["scale"], 1 + PARAM["scale"]) * h)
            sw[i] = int(rs.uniform(1 - PARAM["scale"], 1 + PARAM["scale"]) * h)
        elif op == "rotate":
            deg[i] = rs.randint(-PARAM["rotate"], PARAM["rotate"])
    t = torch.from_numpy
    params = {"crop": (t(crop_r), t(crop_c)), "scale": (t(sh), t(sw)), "rotate": (t(deg),)}
    return DCDraws(t(choice), {op: params[op] for op in ops})


@pytest.mark.parametrize(("strategy", "shape"), [("crop_scale_rotate", (24, 1, 28, 28)),
                                                 ("crop_scale_rotate", (16, 3, 32, 32)),
                                                 ("rotate", (12, 3, 32, 32)), ("scale", (12, 1, 28, 28)),
                                                 ("crop", (12, 3, 32, 32))])
def test_dc_augment_equals_the_authors_given_their_draws(authors_augment, strategy: str,
                                                         shape: tuple[int, int, int, int]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    ops = strategy.split("_")
    for seed in (0, 1, 2):
        np.random.seed(seed)
        ref = authors_augment(x.clone(), dict(PARAM, strategy=strategy), device="cpu")
        d = _replay(seed, shape[0], shape[2], ops)
        assert set(d.choice.tolist()) == set(range(len(ops))) or shape[0] < 12
        ours = DCAugment(strategy).apply(x, d)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_rotation_equals_scipy_for_every_angle_and_odd_sizes() -> None:
    rng = np.random.default_rng(0)
    for h, w, c in [(28, 28, 1), (32, 32, 3), (7, 10, 2)]:
        x = rng.normal(size=(90, c, h, w)).astype(np.float32)
        angles = np.arange(-45, 45)
        ref = []
        for i, a in enumerate(angles):
            im = scipy_rotate(x[i], angle=int(a), axes=(-2, -1), cval=0.37)
            r, cc = int((im.shape[-2] - h) / 2), int((im.shape[-1] - w) / 2)
            ref.append(im[:, r:r + h, cc:cc + w])
        ours = rotate_like_scipy(torch.from_numpy(x), torch.from_numpy(angles), 0.37, -45, 45)
        torch.testing.assert_close(ours, torch.from_numpy(np.stack(ref)), atol=1e-5, rtol=0)


def test_rotation_by_zero_is_the_identity_and_the_prefilter_inverts_the_spline() -> None:
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(rotate_like_scipy(x, torch.zeros(2, dtype=torch.long), 0.0, -45, 45), x,
                               atol=1e-5, rtol=0)
    p = torch.from_numpy(prefilter_matrix(6))  # x[k] = (c[k-1] + 4 c[k] + c[k+1]) / 6, mirrored: hand-checked rows
    a = torch.linalg.inv(p)
    assert torch.allclose(a[0, :3], torch.tensor([4 / 6, 2 / 6, 0.0], dtype=a.dtype))
    assert torch.allclose(a[2, 1:4], torch.tensor([1 / 6, 4 / 6, 1 / 6], dtype=a.dtype))


def test_dc_augment_call_draws_then_applies() -> None:
    x = torch.randn(10, 1, 28, 28)
    aug = DCAugment("crop_scale_rotate")
    d = aug.draw(tuple(x.shape), torch.Generator().manual_seed(5))
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), aug.apply(x, d))
    assert d.params["rotate"][0].min() >= -45 and d.params["rotate"][0].max() < 45
