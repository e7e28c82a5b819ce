"""``scipy.ndimage.rotate`` as DC's augmentation calls it, batched on the device.

The DC/DSA/DM authors' ``utils.augment`` rotates each image on the CPU with
``scipy.ndimage.rotate(img, angle, axes=(-2, -1), cval=fill)`` (defaults: ``reshape=True``, ``order=3``,
``mode="constant"``, ``prefilter=True``) and keeps the centre ``H x W`` of the enlarged result,
starting at ``int((H' - H) / 2)``. This module computes the same numbers for a batch of images with
integer angles, on any device:

1. Prefilter (cubic B-spline interpolation, mirror boundary): the coefficients ``c`` solve
   ``x[k] = (c[k-1] + 4 c[k] + c[k+1]) / 6`` with ``c[-1] = c[1]``, ``c[n] = c[n-2]``, separably per axis,
   so ``C = P_H X P_W^T`` with ``P = A^-1`` (A the tridiagonal system above).
2. Output pixel ``(y, x)`` of the crop is pixel ``o = (y + r0, x + c0)`` of scipy's enlarged output; its
   source point is ``u = R (o - (S_out - 1) / 2) + (S_in - 1) / 2`` with ``R = [[cos a, sin a], [-sin a, cos a]]``
   (``scipy.special.cosdg/sindg``) and ``S_out = int(ptp(R @ corners) + 0.5)``.
3. A source point outside ``[0, H-1] x [0, W-1]`` gets ``fill`` (mode ``constant``); one inside gets
   ``sum_{k,l} C[m(k), m(l)] B3(u0 - k) B3(u1 - l)`` over the 4 x 4 neighbours (``m`` mirrors at the edges,
   ``B3`` the cubic B-spline).

The geometry of step 2-3 (16 source indices and weights per output pixel) depends only on the angle and
the image size; it is computed once in float64 for every angle of the drawn range and cached per device.
Agreement with scipy is checked in tests/test_rotate.py (float32 rounding, ~1e-6).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.special import cosdg, sindg


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, (4 - 6 * t**2 + 3 * t**3) / 6, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def _mirror(k: np.ndarray, n: int) -> np.ndarray:
    k = np.abs(k)
    return np.where(k > n - 1, 2 * (n - 1) - k, k)


def prefilter_matrix(n: int) -> np.ndarray:
    """``P`` (n x n, float64) with ``c = P x``: cubic B-spline coefficients under the mirror boundary."""
    if n == 1:
        return np.ones((1, 1))
    a = np.zeros((n, n))
    for k in range(n):
        a[k, k] += 4 / 6
        for j in (k - 1, k + 1):
            a[k, int(_mirror(np.array(j), n))] += 1 / 6
    return np.linalg.inv(a)


def rotation_taps(h: int, w: int, angle: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one angle (degrees): source index (h*w, 16) into the flattened coefficients, weights (h*w, 16)
    and ``inside`` (h*w,), for the centre ``h x w`` crop of ``scipy.ndimage.rotate(..., reshape=True)``."""
    c, s = float(cosdg(angle)), float(sindg(angle))
    rot = np.array([[c, s], [-s, c]])
    in_shape = np.array([h, w])
    out_bounds = rot @ [[0, 0, h, h], [0, w, 0, w]]
    out_shape = (np.ptp(out_bounds, axis=1) + 0.5).astype(int)
    offset = (in_shape - 1) / 2 - rot @ ((out_shape - 1) / 2)
    r0, c0 = int((out_shape[0] - h) / 2), int((out_shape[1] - w) / 2)
    oy, ox = np.meshgrid(np.arange(h, dtype=np.float64) + r0, np.arange(w, dtype=np.float64) + c0, indexing="ij")
    u = rot[0, 0] * oy + rot[0, 1] * ox + offset[0]
    v = rot[1, 0] * oy + rot[1, 1] * ox + offset[1]
    inside = (u >= 0) & (u <= h - 1) & (v >= 0) & (v <= w - 1)
    fu, fv = np.floor(u), np.floor(v)
    ks = np.arange(-1, 3)
    rows = fu[..., None] + ks  # (h, w, 4)
    cols = fv[..., None] + ks
    wr, wc = _bspline3(u[..., None] - rows), _bspline3(v[..., None] - cols)
    ri, ci = _mirror(rows.astype(np.int64), h), _mirror(cols.astype(np.int64), w)
    idx = (ri[..., :, None] * w + ci[..., None, :]).reshape(h * w, 16)
    wts = (wr[..., :, None] * wc[..., None, :]).reshape(h * w, 16)
    idx = np.where(inside.reshape(h * w, 1), idx, 0)  # outside: any valid index, the weight is unused
    return idx, wts, inside.reshape(h * w)


@lru_cache(maxsize=16)
def _tables(h: int, w: int, lo: int, hi: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    taps = [rotation_taps(h, w, a) for a in range(lo, hi)]
    idx = torch.from_numpy(np.stack([t[0] for t in taps])).to(device)
    wts = torch.from_numpy(np.stack([t[1] for t in taps])).float().to(device)
    inside = torch.from_numpy(np.stack([t[2] for t in taps])).to(device)
    ph = torch.from_numpy(prefilter_matrix(h)).float().to(device)
    pw = torch.from_numpy(prefilter_matrix(w)).float().to(device)
    return idx, wts, inside, ph, pw


def rotate_like_scipy(x: torch.Tensor, angle: torch.Tensor, fill: torch.Tensor | float,
                      lo: int, hi: int) -> torch.Tensor:
    """Rotate each image of ``x`` (N, C, H, W) by its integer ``angle`` (N,) in degrees, ``lo <= angle < hi``,
    as DC's ``rotatefun`` does with scipy (see the module doc). Computed in float32, returned in ``x.dtype``."""
    n, ch, h, w = x.shape
    idx, wts, inside, ph, pw = _tables(h, w, lo, hi, x.device)
    k = (angle.to(x.device).long() - lo)
    coef = (ph @ x.float() @ pw.T).reshape(n, ch, h * w)
    i = idx[k].reshape(n, 1, h * w * 16).expand(-1, ch, -1)
    vals = coef.gather(2, i).view(n, ch, h * w, 16)
    out = (vals * wts[k].view(n, 1, h * w, 16)).sum(-1)
    fill_t = torch.as_tensor(fill, dtype=out.dtype, device=out.device)
    out = torch.where(inside[k].view(n, 1, h * w), out, fill_t)
    return out.view(n, ch, h, w).to(x.dtype)
