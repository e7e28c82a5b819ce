"""GoldFromOres pre-pruning: per-class drops by hand-written scores, ratios, criteria, score cache, one
definition shared with the recipes, scores given from a file."""

from __future__ import annotations

import hashlib
import json

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


# --- one definition: the condense pre-pruning and the recipes --------------------------------------
TINY = {"epochs": 2, "model_kwargs": {"width": 8, "depth": 2}}


@pytest.mark.parametrize("criterion", ["LossInit_large", "LossConverge_small"])
def test_condense_pre_pruning_and_recipe_compute_identical_scores_and_drops(criterion):
    from harness.pruning.goldfromores import LossRun, record_loss_run
    from harness.pruning.recipes import recipe_scores, select_with_recipe
    from harness.pruning.select import Budget

    d = load_dataset("digits")
    d = d.subset(torch.arange(0, len(d), 3))
    spec = PrePrune(criterion, drop_ratio=0.3, seed=5, params=TINY)
    ours = compute_scores(d, spec)  # the condense path
    _, kept, info = drop_samples(d, spec)
    # the recipe path: one seeded scoring run, then the registered score and the drop_per_class rule
    res = record_loss_run(d, LossRun(epochs=2, model_kwargs={"width": 8, "depth": 2}), seed=5)
    src = res.dynamics if criterion.startswith("LossInit") else res.final
    np.testing.assert_array_equal(recipe_scores(criterion, src), ours)
    np.testing.assert_array_equal(select_with_recipe(criterion, src, None, Budget.prune_rate(0.3), seed=0),
                                  kept.numpy())
    # and what they compute: LossInit = mean of the first 2 recorded training-time losses; LossConverge = the
    # cross-entropy of the final model's eval-mode logits
    if criterion.startswith("LossInit"):
        np.testing.assert_allclose(ours, res.dynamics.stat("loss")[:2].astype(np.float64).mean(0), rtol=1e-6)
    else:
        z = torch.from_numpy(res.final.logits)
        ce = torch.nn.functional.cross_entropy(z.double(), d.labels, reduction="none").numpy()
        np.testing.assert_allclose(ours, ce, rtol=1e-5, atol=1e-7)
        assert not np.allclose(ours, res.dynamics.stat("loss")[-1], rtol=1e-3)  # not the training-time loss
    assert info["scores"]["source"] == "computed" and info["scores"]["params"]["epochs"] == 2
    assert len(kept) == len(d) - sum(int(0.3 * n) for n in d.class_counts())


def test_defaults_of_the_loss_criteria():
    assert PrePrune("LossInit_large", drop_ratio=0.5).resolved_params()["epochs"] == 2
    assert PrePrune("LossConverge_large", drop_ratio=0.5).resolved_params()["epochs"] == 10
    from harness.pruning.scores import get_score

    assert get_score("loss_init").params() == {"epochs": 2} and get_score("loss_converge").needs == "final_eval"


# --- given scores (file / authors) ---------------------------------------------------------------
def test_scores_from_a_file_and_their_errors(tmp_path):
    from harness.errors import FormatError

    d = load_dataset("digits")
    s = np.random.default_rng(0).random(len(d))
    np.save(tmp_path / "s.npy", s)
    (tmp_path / "s.json").write_text(json.dumps(s.tolist()))
    for f in ("s.npy", "s.json"):
        spec = PrePrune("LossInit_large", drop_ratio=0.4, scores=str(tmp_path / f))
        _, kept, info = drop_samples(d, spec)
        dropped = np.setdiff1d(np.arange(len(d)), kept.numpy())
        np.testing.assert_array_equal(dropped, select_drops(s, d.labels, 10, 0.4, "large"))
        assert info["scores"]["source"] == "file" and info["scores"]["md5"] == hashlib.md5(
            (tmp_path / f).read_bytes()).hexdigest()
    np.save(tmp_path / "short.npy", s[:-1])
    with pytest.raises(FormatError, match=f"{len(d) - 1} scores, expected {len(d)}"):
        drop_samples(d, PrePrune("LossInit_large", drop_ratio=0.4, scores=str(tmp_path / "short.npy")))
    bad = s.copy()
    bad[7] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(FormatError, match="1 scores are NaN or infinite \\(first at index 7\\)"):
        drop_samples(d, PrePrune("LossInit_large", drop_ratio=0.4, scores=str(tmp_path / "nan.npy")))
    (tmp_path / "m.npy").write_bytes(b"not numpy")
    with pytest.raises(FormatError, match="m.npy"):
        drop_samples(d, PrePrune("LossInit_large", drop_ratio=0.4, scores=str(tmp_path / "m.npy")))
    with pytest.raises(ConfigError, match="Random criterion takes no scores"):
        PrePrune("Random", drop_ratio=0.4, scores="authors")
    with pytest.raises(ConfigError, match="give one or the other"):
        PrePrune("LossInit_large", drop_ratio=0.4, scores="authors", params={"epochs": 3})


def test_given_scores_follow_the_validation_split(tmp_path, monkeypatch):
    """With a carved validation split, the given scores (aligned with the whole set) are subset to its train part."""
    import adapters.condense.goldfromores as gfo
    from adapters.condense import create_condenser
    from adapters.condense.base import split_validation

    d = load_dataset("digits")
    np.save(tmp_path / "s.npy", np.arange(len(d), dtype=np.float64))
    seen = {}
    real_drop = gfo.drop_samples

    def spy(train, spec, **kw):
        seen["scores"] = kw["scores"]
        return real_drop(train, spec, **kw)

    monkeypatch.setattr(gfo, "drop_samples", spy)
    cond = create_condenser("dm")
    cfg = cond.default_config(iterations=1, model="convnet_d2", model_kwargs={"width": 8}, batch_real=16,
                              eval_every=1, eval_epochs=1)
    cs = cond.condense(d, 1, cfg, pre_prune=PrePrune("LossInit_large", drop_ratio=0.5, scores=str(tmp_path / "s.npy")),
                       seed=3)
    tr_idx, _ = split_validation(d, cfg.val_fraction, 3)
    np.testing.assert_array_equal(seen["scores"], tr_idx.numpy().astype(np.float64))
    assert cs.provenance["pre_prune_result"]["scores"]["source"] == "file"
    assert cs.provenance["pre_prune"]["scores"] == str(tmp_path / "s.npy")


def test_coreset_flow_scores_loss_converge_on_the_final_models_eval_pass(tmp_path):
    """The coreset flow's LossConverge recipe = the eval-mode loss of the dynamics run's final checkpoint."""
    from harness.dynamics import Dynamics
    from harness.models import create_model
    from harness.pruning.coreset import run_coreset
    from harness.pruning.select import Budget

    kw = dict(protocol_dynamics="ccs", protocol_train="ccs", seed=0, workdir=tmp_path, model="dc_mlp",
              epochs_dynamics=2, epochs_train=1, runs=1)
    rep = run_coreset("digits", "LossConverge_large", Budget.prune_rate(0.5), **kw)
    scores = np.load(f"{rep['out_dir']}/scores.npy")
    d = load_dataset("digits")
    net = create_model("dc_mlp", num_classes=10, in_chans=1, img_size=d.size)
    net.load_state_dict(torch.load(f"{rep['dynamics_dir']}/checkpoint.pt", weights_only=True)["model"])
    with torch.no_grad():
        ce = torch.nn.functional.cross_entropy(net.eval()(d.normalized()).double(), d.labels, reduction="none")
    np.testing.assert_allclose(scores, ce.numpy(), rtol=1e-5, atol=1e-7)
    dyn = Dynamics.open(rep["dynamics_dir"])
    assert not np.allclose(scores, dyn.stat("loss")[-1], rtol=1e-3)  # not the last training-time loss
    kept = np.load(f"{rep['out_dir']}/kept.npy")
    np.testing.assert_array_equal(np.setdiff1d(np.arange(len(d)), kept),
                                  select_drops(scores, d.labels, 10, 0.5, "large"))
