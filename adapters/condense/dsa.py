"""DSA: Dataset Condensation with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021).

DC's gradient matching (see :mod:`adapters.condense.dc`) with the real and synthetic batches of a
class passed through the *same* differentiable augmentation A_omega before the gradients are taken:

    L(S) = sum_c D( grad_theta CE(theta; A_{omega_c}(B_c^real)), grad_theta CE(theta; A_{omega_c}(S_c)) ),

with omega_c drawn once per class per image step and shared by every sample of both batches
(siamese). Here the sharing is a seed: one draw from the iteration's generator seeds two fresh
generators, one for each :class:`harness.augment.DSA` call with ``siamese=True`` (the reference
reseeds the global RNG from the wall clock; ours never reads the clock). The inner-loop network
training on the synthetic set uses per-sample (non-siamese) DSA. Default init is ``real`` and the
strategy ``color_crop_cutout_flip_scale_rotate`` (without ``flip`` on digit datasets, README).
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.condense.base import register_condenser
from adapters.condense.dc import DC, DCConfig


@dataclass(frozen=True)
class DSAConfig(DCConfig):
    init: str = "real"  # the DSA README commands use --init real


@register_condenser("dsa")
class DSACondenser(DC):
    config_cls = DSAConfig
    use_dsa = True
