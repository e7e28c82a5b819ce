"""Turn a condensed set into what the evaluator trains on: decoded, and with its ZCA refitted."""

from __future__ import annotations

import os

from condensed.set import CondensedSet
from harness.augment import ZCA
from harness.data import load_dataset
from harness.data.images import LabeledImages


def prepare_for_eval(cs: CondensedSet, dataset: str | None = None, data_root: str | os.PathLike | None = None,
                     cache_dir: str | os.PathLike | None = None) -> tuple[LabeledImages, ZCA | None]:
    """What :func:`harness.evaluate.evaluate` needs: the decoded set, and for ZCA-space sets the
    whitening refitted on the real training split exactly as the set's ``zca`` record says
    (:meth:`harness.augment.ZCA.from_record`: implementation, ``eps`` and the space it was fitted in:
    'pixel train' = [0, 1] pixels as MTT, 'normalized train' = mean/std-normalized pixels).
    The evaluator whitens the test images from that same space (:func:`harness.evaluate.model_inputs`)."""
    dec = cs.decoded()
    zca = None
    if dec.space == "zca":
        real = load_dataset(dataset or dec.dataset, "train", data_root=data_root, cache_dir=cache_dir)
        zca = ZCA.from_record(dec.zca or {})
        zca.fit(real.as_space(zca.fit_space).images)
    return dec.to_labeled(), zca
