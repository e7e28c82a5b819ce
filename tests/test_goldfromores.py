"""GoldFromOres pre-pruning: per-class drops by hand-written scores, ratios, criteria, score cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adapters.condense.goldfromores import (
    CRITERIA,
    PrePrune,
    compute_scores,
    drop_samples,
    parse_criterion,
    select_drops,
)
from harness.data import LabeledImages, load_dataset
from harness.errors import ConfigError

# class 0: indices 0..4 (interleaved with class 1: indices 5..8 below)
LABELS = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 0])
SCORES = np.array([0.5, 9.0, 0.1, 1.0, 0.9, 5.0, 0.3, 3.0, 0.7, 0.2])
# class 0 = idx [0, 2, 4, 6, 8, 9] scores [.5 .1 .9 .3 .7 .2]; class 1 = idx [1, 3, 5, 7] scores [9 1 5 3]


def test_large_drops_the_highest_scores_per_class():
    # drop 0.5: class 0 int(3.0) = 3 -> {4 (.9), 8 (.7), 0 (.5)}; class 1 int(2.0) = 2 -> {1 (9), 5 (5)}
    assert select_drops(SCORES, LABELS, 2, 0.5, "large").tolist() == [0, 1, 4, 5, 8]


def test_small_drops_the_lowest_scores_per_class():
    # class 0 -> {2 (.1), 9 (.2), 6 (.3)}; class 1 -> {3 (1), 7 (3)}
    assert select_drops(SCORES, LABELS, 2, 0.5, "small").tolist() == [2, 3, 6, 7, 9]


def test_counts_use_int_of_ratio_times_class_size():
    # 0.4: class 0 int(2.4) = 2, class 1 int(1.6) = 1
    assert select_drops(SCORES, LABELS, 2, 0.4, "large").tolist() == [1, 4, 8]
    assert select_drops(SCORES, LABELS, 2, 0.0, "large").tolist() == []


def test_keep_ratio_is_one_minus_drop_ratio():
    data = LabeledImages(images=torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone(),
                         labels=torch.from_numpy(LABELS), num_classes=2, mean=(0.5,), std=(0.5,), name="toy:train")
    spec = PrePrune("Custom_large" if False else "LossInit_large", keep_ratio=0.5)
    kept, idx, info = drop_samples(data, spec, scores=SCORES)
    assert idx.tolist() == [2, 3, 6, 7, 9] and kept.images[:, 0, 0, 0].tolist() == [2, 3, 6, 7, 9]
    assert info["dropped_per_class"] == [3, 2] and info["n_after"] == 5
    _, idx_small, _ = drop_samples(data, PrePrune("LossInit_small", drop_ratio=0.5), scores=SCORES)
    assert idx_small.tolist() == [0, 1, 4, 5, 8]
    # keep 0.9 of 10 drops 1 (the reference's 1 - 0.9 = 0.0999... would drop 0)
    assert PrePrune("Random", keep_ratio=0.9).drop_fraction == 0.1
    ten = np.zeros(10, dtype=int)
    assert select_drops(np.arange(10.0), ten, 1, PrePrune("Random", keep_ratio=0.9).drop_fraction,
                        "large").tolist() == [9]


def test_ties_keep_dataset_order():
    assert select_drops(np.ones(6), np.zeros(6, dtype=int), 1, 0.5, "small").tolist() == [0, 1, 2]


def test_spec_validation():
    with pytest.raises(ConfigError, match="exactly one"):
        PrePrune("Random")
    with pytest.raises(ConfigError, match="exactly one"):
        PrePrune("Random", drop_ratio=0.1, keep_ratio=0.9)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="drop_ratio"):
            PrePrune("Random", drop_ratio=bad)
    with pytest.raises(ConfigError, match="MonteCarlo_small"):
        PrePrune("MonteCarl_small", drop_ratio=0.1)
    with pytest.raises(ConfigError, match="unknown parameters"):
        PrePrune("LossInit_large", drop_ratio=0.1, params={"epochz": 3})
    assert parse_criterion("lossinit_LARGE") == ("LossInit", "large")
    assert parse_criterion("rand") == ("Random", "large")
    with pytest.raises(ConfigError):
        select_drops(SCORES[:5], LABELS, 2, 0.5, "large")  # scores must be index-aligned


def test_random_is_seeded():
    d = load_dataset("digits")
    a = drop_samples(d, PrePrune("Random", drop_ratio=0.5, seed=1))[1]
    b = drop_samples(d, PrePrune("Random", drop_ratio=0.5, seed=1))[1]
    c = drop_samples(d, PrePrune("Random", drop_ratio=0.5, seed=2))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a) == len(d) - sum(int(0.5 * n) for n in d.class_counts())


def test_loss_init_scores_are_cached_and_reused(tmp_path, monkeypatch):
    d = load_dataset("digits")
    d = d.subset(torch.arange(0, len(d), 3))
    spec = PrePrune("LossInit_large", drop_ratio=0.5, params={"epochs": 2, "model_kwargs": {"width": 8, "depth": 2}})
    s1 = compute_scores(d, spec, cache_dir=tmp_path)
    assert s1.shape == (len(d),) and np.isfinite(s1).all() and s1.std() > 0
    assert len(list((tmp_path / "goldfromores").glob("LossInit-*.npy"))) == 1
    monkeypatch.setitem(CRITERIA._items, "LossInit", lambda *a: pytest.fail("recomputed despite the cache"))
    assert np.array_equal(compute_scores(d, spec, cache_dir=tmp_path), s1)
    kept, idx, _ = drop_samples(d, spec, cache_dir=tmp_path)
    for c in range(10):  # every kept sample of a class scores no higher than every dropped one
        cls = (d.labels == c).numpy()
        keep_mask = np.zeros(len(d), dtype=bool)
        keep_mask[idx.numpy()] = True
        assert s1[cls & keep_mask].max() <= s1[cls & ~keep_mask].min()


def test_monte_carlo_scores_small_run():
    d = load_dataset("digits")
    d = d.subset(torch.arange(0, len(d), 2))
    spec = PrePrune("MonteCarlo_small", drop_ratio=0.2, params={
        "trials": 2, "subset_fraction": 0.1, "iterations": 1, "eval_epochs": 1, "eval_size": 100,
        "model": "convnet_d2", "model_kwargs": {"width": 8}})
    s = compute_scores(d, spec)
    assert s.shape == (len(d),) and np.isfinite(s).all() and ((0 <= s) & (s <= 1)).all()
