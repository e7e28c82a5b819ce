"""Selection rules: budgets, ranking, CCS strata, DUAL Beta sampling, k-means prototypes, seeding."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import ConfigError
from harness.pruning.select import (
    Budget,
    beta,
    beta_weights,
    bin_allocate,
    kmeans,
    random,
    rank,
    save_kept,
    select,
    strata_edges,
    stratified,
)


def test_budget_constructors_and_totals():
    assert Budget.keep_fraction(0.1).total(50000) == 5000
    assert Budget.prune_rate(0.9).total(50000) == 5000  # TDDS: drop int(r N)
    assert Budget.keep_fraction(0.29).total(100) == 29  # 0.29 * 100 = 28.999999999999996 in floats
    assert Budget.count(7).total(10) == 7
    assert Budget.ipc(3).total(100, num_classes=10) == 30
    np.testing.assert_array_equal(Budget.ipc(2).per_class([5, 3]), [2, 2])
    np.testing.assert_array_equal(Budget.keep_fraction(0.5).per_class([5, 3]), [2, 1])
    np.testing.assert_array_equal(Budget.count(7).per_class([5, 1, 5]), [3, 1, 3])  # even split, leftovers
    for bad in (lambda: Budget.keep_fraction(0), lambda: Budget.keep_fraction(1.5), lambda: Budget.prune_rate(1.0),
                lambda: Budget.count(0), lambda: Budget.ipc(2.5), lambda: Budget("half", 0.5)):
        with pytest.raises(ConfigError):
            bad()
    with pytest.raises(ConfigError, match="keeps 11 of 10"):
        Budget.count(11).total(10)
    with pytest.raises(ConfigError, match="class 1 has 3 samples, 4 requested"):
        Budget.ipc(4).per_class([5, 3])


def test_rank_easy_hard_direction_balance():
    s = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    b = Budget.count(2)
    np.testing.assert_array_equal(rank(s, y, b, seed=0, keep="hard"), [0, 2])
    np.testing.assert_array_equal(rank(s, y, b, seed=0, keep="easy"), [1, 5])
    np.testing.assert_array_equal(rank(s, y, b, seed=0, keep="hard", direction="low_hard"), [1, 5])  # AUM
    np.testing.assert_array_equal(rank(s, y, b, seed=0, keep="hard", balance=True), [0, 4])
    np.testing.assert_array_equal(select("keep_easy", s, y, Budget.ipc(1), seed=0, balance=True), [1, 5])
    np.testing.assert_array_equal(rank(np.zeros(4), [0, 0, 1, 1], Budget.count(2), seed=0), [0, 1])  # ties
    with pytest.raises(ConfigError, match="do not match"):
        rank(s[:5], y, b, seed=0)
    with pytest.raises(ConfigError, match="NaN"):
        rank(np.array([1.0, np.nan, 0, 0, 0, 0]), y, b, seed=0)


def test_random_seeded_and_balanced():
    y = np.repeat(np.arange(4), 25)
    a = random(None, y, Budget.keep_fraction(0.2), seed=3)
    assert a.size == 20 and np.array_equal(a, random(None, y, Budget.keep_fraction(0.2), seed=3))
    assert not np.array_equal(a, random(None, y, Budget.keep_fraction(0.2), seed=4))
    bal = random(None, y, Budget.ipc(5), seed=0, balance=True)
    np.testing.assert_array_equal(np.bincount(y[bal]), [5, 5, 5, 5])
    assert np.all(np.diff(bal) > 0)


def test_bin_allocate_smallest_stratum_first():
    # sizes 1, 8, 3, 0; budget 10. Ascending order: 0 (s3), 1 (s0), 3 (s2), 8 (s1):
    # s3: min(0, 10 // 4 = 2) = 0; s0: min(1, 10 // 3 = 3) = 1; s2: min(3, 9 // 2 = 4) = 3; s1: min(8, 6 // 1) = 6
    np.testing.assert_array_equal(bin_allocate(10, np.array([1, 8, 3, 0])), [1, 6, 3, 0])
    np.testing.assert_array_equal(bin_allocate(4, np.array([5, 5, 5])), [1, 1, 2])
    assert bin_allocate(13, np.array([1, 8, 3, 0])).sum() == 12  # can't exceed the population


def test_ccs_stratified_skewed_strata():
    # 4 strata over [0, 1.0001]: width 0.250025. Populations: s0 1 (0.0), s1 8, s2 3, s3 1 (1.0 = max)
    scores = np.array([0.0] + [0.3 + 0.01 * i for i in range(8)] + [0.6, 0.65, 0.7] + [1.0])
    y = np.zeros(scores.size, np.int64)
    kept = stratified(scores, y, Budget.count(10), seed=0, strata=4)
    edges = strata_edges(scores, 4)
    np.testing.assert_allclose(edges[-1], 1.0001)
    per_stratum = np.bincount(np.searchsorted(edges, scores[kept], side="right") - 1, minlength=4)
    # ascending: s0 (1) min(1, 10//4=2)=1; s3 (1) min(1, 9//3=3)=1; s2 (3) min(3, 8//2=4)=3; s1: 5
    np.testing.assert_array_equal(per_stratum, [1, 5, 3, 1])
    assert kept.size == 10 and np.array_equal(kept, stratified(scores, y, Budget.count(10), seed=0, strata=4))
    others = {tuple(stratified(scores, y, Budget.count(10), seed=s, strata=4)) for s in range(10)}
    assert len(others) > 1  # uniform sampling inside stratum 1


def test_ccs_hard_cutoff_by_other_key():
    scores = np.linspace(0, 1, 10)
    aum = np.array([5, -3, 2, 1, -4, 0, 3, 4, 6, 7], float)
    y = np.zeros(10, np.int64)
    # drop int(0.2 * 10) = 2 lowest-AUM samples (4 and 1), then select 8 of the remaining 8
    kept = stratified(scores, y, Budget.count(8), seed=0, cutoff_ratio=0.2, cutoff_scores=aum,
                      cutoff_direction="low_hard")
    np.testing.assert_array_equal(kept, [0, 2, 3, 5, 6, 7, 8, 9])
    # YOCO variant: cut by the key itself, high = hard -> drop the 2 highest scores (8, 9)
    kept = stratified(scores, y, Budget.count(8), seed=0, cutoff_ratio=0.2, within="hard_first")
    np.testing.assert_array_equal(kept, np.arange(8))
    with pytest.raises(ConfigError, match="hard_first"):
        stratified(scores, y, Budget.count(8), seed=0, within="first")  # index order is not YOCO's first-k
    with pytest.raises(ConfigError, match="remain after the cut-off"):
        stratified(scores, y, Budget.count(9), seed=0, cutoff_ratio=0.2)


def test_ccs_balanced_runs_inside_each_class():
    # class 0: idx 0-5, scores 0.0 .. 0.5; class 1: idx 6-9, scores 0.9 0.8 0.7 0.6 (high = hard)
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.8, 0.7, 0.6])
    y = np.array([0] * 6 + [1] * 4)
    # cut-off 0.5 per class: class 0 drops int(3.0)=3 hardest (idx 5, 4, 3), keeps floor(0.5*6)=3 -> 0 1 2;
    # class 1 drops int(2.0)=2 (idx 6, 7), keeps floor(0.5*4)=2 -> 8 9
    kept = stratified(scores, y, Budget.keep_fraction(0.5), seed=0, strata=2, cutoff_ratio=0.5,
                      within="hard_first", balance=True)
    np.testing.assert_array_equal(kept, [0, 1, 2, 8, 9])
    # globally the same cut-off removes the 5 hardest (all of class 1 and idx 5)
    glob = stratified(scores, y, Budget.keep_fraction(0.5), seed=0, strata=2, cutoff_ratio=0.5, within="hard_first")
    np.testing.assert_array_equal(glob, [0, 1, 2, 3, 4])
    # YOCO's balanced branch: that global cut first, then per class -> class 1 has nothing left (YOCO crashes)
    with pytest.raises(ConfigError, match="in class 1"):
        stratified(scores, y, Budget.keep_fraction(0.5), seed=0, strata=2, cutoff_ratio=0.5, within="hard_first",
                   balance=True, cutoff_scope="global")
    # global cut 0.2: drops idx 6, 7 (0.9, 0.8); class 0 keeps 3 of 6: bins over [0, 0.50005] {0,1,2} {3,4,5},
    # 1 + 2 (ascending population, ties: the earlier stratum first), hardest first: 2 | 5, 4; class 1 keeps 2
    # of what is left {8, 9}: 8, 9
    kept = stratified(scores, y, Budget.keep_fraction(0.5), seed=0, strata=2, cutoff_ratio=0.2, within="hard_first",
                      balance=True, cutoff_scope="global")
    np.testing.assert_array_equal(kept, [2, 4, 5, 8, 9])
    # no cut-off, 2 per class, 2 strata per class: class 0 bins {0,1,2} {3,4,5} -> hardest of each: 2, 5;
    # class 1 over [0.6, 0.90009]: bins {8, 9} {6, 7} -> 8 (0.7 > 0.6), 6 (0.9 > 0.8)
    kept = stratified(scores, y, Budget.count(4), seed=0, strata=2, within="hard_first", balance=True)
    np.testing.assert_array_equal(kept, [2, 5, 6, 8])
    with pytest.raises(ConfigError, match="in class 1"):
        stratified(scores, y, Budget.ipc(3), seed=0, strata=2, cutoff_ratio=0.5, balance=True)


def test_strata_negative_max_keeps_top_sample():
    scores = np.array([-5.0, -3.0, -1.0])  # 1.0001 * max < max here; CCS would lose the -1.0 sample
    kept = stratified(scores, np.zeros(3, np.int64), Budget.count(3), seed=0, strata=50)
    np.testing.assert_array_equal(kept, [0, 1, 2])
    assert stratified(np.ones(5), np.zeros(5, np.int64), Budget.count(2), seed=0).size == 2  # all equal


def test_beta_weights_hand_computed():
    from scipy.stats import beta as beta_dist

    scores = np.array([0.5, 1.0, 2.0, 1.5])
    mu = np.array([0.2, 0.5, 0.8, 0.6])
    p, info = beta_weights(scores, mu, prune_rate=0.5, c_d=1.0, top=2)
    # top-2 scores: samples 2, 3 -> anchor (0.8 + 0.6) / 2 = 0.7; beta = 15 * 0.3 * (1 - 0.5) = 2.25; alpha 13.75
    assert info["anchor"] == pytest.approx(0.7)
    assert info["beta"] == pytest.approx(2.25) and info["alpha"] == pytest.approx(13.75)
    ref = beta_dist.pdf(mu, 13.75, 2.25) * scores
    np.testing.assert_allclose(p, ref / ref.sum(), rtol=1e-9)


def test_beta_sampling_frequencies_follow_weights():
    scores = np.array([0.5, 1.0, 2.0, 1.5, 0.8])
    mu = np.array([0.3, 0.5, 0.8, 0.6, 0.7])
    y = np.zeros(5, np.int64)
    b = Budget.count(1)  # one draw: frequencies are the weights; r = 1 - 1/5 = 0.8
    p, _ = beta_weights(scores, mu, prune_rate=0.8, c_d=4.0)
    counts = np.zeros(5)
    for seed in range(3000):
        counts[beta(scores, y, b, seed=seed, mu=mu)] += 1
    np.testing.assert_allclose(counts / counts.sum(), p, atol=0.03)
    a = beta(scores, y, Budget.count(3), seed=7, mu=mu)
    assert a.size == 3 and np.array_equal(a, beta(scores, y, Budget.count(3), seed=7, mu=mu))
    with pytest.raises(ConfigError, match="needs mu"):
        beta(scores, y, b, seed=0)
    with pytest.raises(ConfigError, match="non-zero weight"):
        beta(np.array([0, 0, 0, 1.0, 0]), y, Budget.count(2), seed=0, mu=mu)


def test_kmeans_prototypes_global_and_per_class():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10]], float)
    x = np.concatenate([c + rng.normal(scale=0.5, size=(20, 2)) for c in centers])
    y = np.repeat([0, 1, 2], 20)
    kept = kmeans(None, y, Budget.count(3), seed=0, features=x)
    assert sorted(y[kept]) == [0, 1, 2]  # one prototype per blob
    # one cluster per class: the centroid is the class mean; the prototype is the sample nearest to it
    nearest = [20 * c + int(np.argmin(((x[y == c] - x[y == c].mean(0)) ** 2).sum(1))) for c in range(3)]
    np.testing.assert_array_equal(kmeans(None, y, Budget.ipc(1), seed=0, features=x, balance=True), nearest)
    assert np.array_equal(kept, kmeans(None, y, Budget.count(3), seed=0, features=x))
    with pytest.raises(ConfigError, match="needs features"):
        kmeans(None, y, Budget.count(3), seed=0)


def test_save_kept(tmp_path):
    p = save_kept(tmp_path / "k.npy", np.array([3, 1, 2]))
    back = np.load(p)
    assert back.dtype == np.int64 and back.tolist() == [1, 2, 3]
    with pytest.raises(ConfigError):
        save_kept(tmp_path / "bad.npy", np.array([0.5]))
    assert not (tmp_path / "bad.npy").exists()
