"""Recipe names (YOCO suffix grammar, GoldFromOres drop criteria) and select_with_recipe."""

from __future__ import annotations

import numpy as np
import pytest

from harness.dynamics import Dynamics
from harness.errors import ConfigError
from harness.pruning.recipes import list_recipes, parse_recipe, select_with_recipe
from harness.pruning.scores import FinalEval, compute_score
from harness.pruning.select import Budget
from harness.registry import UnknownNameError


def test_required_recipes_and_defaults():
    for name in ("forgetting", "forgetting_easy_balance", "el2n", "aum", "entropy", "ssp", "ccs", "tdds", "dual",
                 "yoco", "random", "random_balance", "LossInit_large", "LossConverge_small"):
        parse_recipe(name)
    assert {"forgetting", "ccs", "dual", "yoco", "random"} <= set(list_recipes())
    r = parse_recipe("forgetting_easy_balance")
    assert (r.score, r.rule, r.keep, r.balance) == ("forgetting", "rank", "easy", True)
    r = parse_recipe("el2n")  # YOCO switches: hard + imbalanced
    assert (r.keep, r.balance) == ("hard", False)
    r = parse_recipe("yoco")  # LBPE, easy, balanced
    assert (r.score, r.keep, r.balance) == ("lbpe", "easy", True)
    assert parse_recipe("yoco_imbalance").balance is False
    assert parse_recipe("random_balance").balance is True and parse_recipe("ssp_balance").balance is True
    assert parse_recipe("aum").direction == "low_hard"
    # GoldFromOres: the suffix names the DROPPED end, per class
    r = parse_recipe("LossInit_large")
    assert (r.score, r.rule, dict(r.rule_opts)) == ("loss_init", "drop_per_class", {"order": "large"})
    r = parse_recipe("LossConverge_small")
    assert (r.score, r.rule, dict(r.rule_opts)) == ("loss_converge", "drop_per_class", {"order": "small"})


def test_unknown_and_conflicting_names():
    with pytest.raises(UnknownNameError, match="did you mean.*forgetting"):
        parse_recipe("forgeting")
    with pytest.raises(UnknownNameError):
        parse_recipe("ccs_hard")  # ccs takes no suffixes
    with pytest.raises(UnknownNameError):
        parse_recipe("el2n_sideways")
    with pytest.raises(ConfigError, match="conflicting"):
        parse_recipe("el2n_easy_hard")


def _dyn():
    # 6 samples, 2 classes, 3 epochs of loss / prob_margin
    labels = np.array([0, 0, 0, 1, 1, 1])
    loss = np.array([[3, 1, 2, 6, 4, 5]] * 3, np.float32)
    pm = np.array([[0.5, -0.9, 0.1, 0.2, 0.9, -0.1]] * 3, np.float32)
    return Dynamics.from_arrays(labels, 2, loss=loss, prob_margin=pm)


def test_select_with_recipe_directions():
    d = _dyn()
    # aum: keep hard = lowest accumulated margin (1: -2.7, 5: -0.3)
    np.testing.assert_array_equal(select_with_recipe("aum", d, None, Budget.count(2), seed=0), [1, 5])
    np.testing.assert_array_equal(select_with_recipe("aum_easy", d, None, Budget.count(2), seed=0), [0, 4])
    # LossInit_large drops int(0.5 * 3) = 1 per class, the largest mean loss of epochs 0-1 (idx 0: 3, idx 3: 6)
    np.testing.assert_array_equal(select_with_recipe("LossInit_large", d, None, Budget.prune_rate(0.5), seed=0),
                                  [1, 2, 4, 5])
    np.testing.assert_array_equal(select_with_recipe("LossInit_small", d, None, Budget.keep_fraction(0.5),
                                                     seed=0), [0, 2, 3, 5])
    with pytest.raises(ConfigError, match="drops a ratio of each class"):
        select_with_recipe("LossInit_large", d, None, Budget.ipc(2), seed=0)
    # LossConverge reads the final model's eval pass: CE = log(1 + exp(-m)) with target margins m below;
    # the smallest CE per class is idx 1 (m 5) and idx 4 (m 4)
    m = np.array([0.0, 5.0, -3.0, -2.0, 4.0, 1.0], np.float32)
    ev = FinalEval(np.where(d.labels[:, None] == np.arange(2), m[:, None], 0.0), d.labels)
    np.testing.assert_allclose(compute_score("loss_converge", ev), np.log1p(np.exp(-m)), rtol=1e-6)
    np.testing.assert_array_equal(select_with_recipe("LossConverge_small", ev, None, Budget.prune_rate(0.5),
                                                     seed=0), [0, 2, 3, 5])
    with pytest.raises(ConfigError, match="eval-mode outputs"):
        select_with_recipe("LossConverge_small", d, None, Budget.prune_rate(0.5), seed=0)
    # same selection from a saved score array
    s = compute_score("aum", d)
    np.testing.assert_array_equal(select_with_recipe("aum", s, d.labels, Budget.count(2), seed=0), [1, 5])
    with pytest.raises(ConfigError, match="labels are needed"):
        select_with_recipe("aum", s, None, Budget.count(2), seed=0)


def test_ccs_recipe_cuts_lowest_aum_automatically():
    rng = np.random.default_rng(0)
    n = 100
    pm = rng.uniform(-1, 1, size=(3, n)).astype(np.float32)
    d = Dynamics.from_arrays(np.zeros(n, np.int64), 2, prob_margin=pm)
    kept = select_with_recipe("ccs", d, None, Budget.prune_rate(0.9), seed=0)
    assert kept.size == 10
    aum = compute_score("aum", d)
    lowest30 = np.argsort(aum)[:30]  # CCS README at 90 % pruning: mis-ratio 0.3 on AUM
    assert not set(kept) & set(lowest30)
    assert np.array_equal(kept, select_with_recipe("ccs", d, None, Budget.prune_rate(0.9), seed=0))


def test_ccs_balance_suffix_selects_per_class():
    # YOCO Table 5 compares balanced and imbalanced forms of every method, CCS included
    assert parse_recipe("ccs_balance").balance and parse_recipe("ccs_yoco_balance").balance
    assert not parse_recipe("ccs_yoco_imbalance").balance
    # class 1 holds the hard (high-EL2N) samples. YOCO cuts once over the whole set (int(0.25 * 8) = 2: idx
    # 4, 5), then selects per class: class 0 {0..3} keeps 2, class 1 {6, 7} keeps both. Globally the same cut
    # and 4 strata-picks come from the 6 left.
    el2n = np.array([[0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6]], np.float32)
    d = Dynamics.from_arrays(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 2, el2n=el2n)
    opts = {"cutoff_ratio": 0.25, "strata": 2}
    per = select_with_recipe("ccs_yoco_balance", d, None, Budget.keep_fraction(0.5), seed=0, **opts)
    # class 0 strata over [0.1, 0.40004]: {0, 1} {2, 3}, one each, hardest first: 1, 3
    np.testing.assert_array_equal(per, [1, 3, 6, 7])
    glob = select_with_recipe("ccs_yoco", d, None, Budget.keep_fraction(0.5), seed=0, **opts)
    # left: 0.1 0.2 0.3 0.4 | 0.7 0.6 over [0.1, 0.70007], bins {0, 1, 2, 3} {6, 7}: 2 each, hardest first
    np.testing.assert_array_equal(glob, [2, 3, 6, 7])
    # the CCS recipe's balance cuts per class, int(0.25 * 4) = 1 each, the lowest (AUM reading): idx 0 and 7
    own = select_with_recipe("ccs_balance", el2n[0], d.labels, Budget.keep_fraction(0.5), seed=0, **opts)
    assert 0 not in own and 7 not in own and np.bincount(d.labels[own]).tolist() == [2, 2]


def test_dual_recipe_beta_sampling_from_dynamics():
    rng = np.random.default_rng(1)
    n = 200
    tp = np.clip(np.cumsum(rng.uniform(0, 0.05, size=(30, n)), 0), 0, 1).astype(np.float32)
    d = Dynamics.from_arrays(rng.integers(0, 2, n), 2, target_prob=tp)
    a = select_with_recipe("dual", d, None, Budget.prune_rate(0.5), seed=3)
    assert a.size == 100 and np.array_equal(a, select_with_recipe("dual", d, None, Budget.prune_rate(0.5), seed=3))
    assert not np.array_equal(a, select_with_recipe("dual", d, None, Budget.prune_rate(0.5), seed=4))
    with pytest.raises(ConfigError, match="needs mu"):
        select_with_recipe("dual", compute_score("dual", d), d.labels, Budget.prune_rate(0.5), seed=0)
