"""Condensers (DC, DSA, DM, IDC): loss falls, siamese DSA, IDC shapes, checkpoint/resume, input errors."""

from __future__ import annotations

import argparse

import pytest
import torch

from adapters.condense import PrePrune, create_condenser, get_loops, list_condensers, match_loss
from adapters.condense.base import make_context
from adapters.condense.dc import distance_wb
from condensed import CondensedSet
from harness.data import load_dataset
from harness.errors import ConfigError

SMALL = {"width": 16, "depth": 2}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_cfg(name: str, **kw):
    return create_condenser(name).default_config(model_kwargs=SMALL, batch_real=32, checkpoint_every=1, **kw)


def test_registry_lists_all_methods():
    assert set(list_condensers()) >= {"dc", "dsa", "dm", "idc"}
    with pytest.raises(KeyError, match="dm"):
        create_condenser("dmm")


def test_get_loops_reference_and_rule():
    assert [get_loops(i) for i in (1, 10, 20, 30, 40, 50)] == [(1, 1), (10, 50), (20, 25), (30, 20), (40, 15),
                                                               (50, 10)]
    assert get_loops(2) == (1, 1) and get_loops(15) == (10, 50)  # nearest listed; ties go to the smaller IPC
    assert get_loops(100) == (50, 10) and get_loops(1000) == (50, 10)  # above 50: (50, 10), VICO issue #2


def test_layerwise_distance():
    g = torch.randn(4, 3, 3, 3)
    assert float(distance_wb(g, g)) == pytest.approx(0.0, abs=1e-5)
    assert float(distance_wb(g, -g)) == pytest.approx(8.0, abs=1e-4)  # 4 rows, cosine distance 2 each
    assert float(distance_wb(torch.randn(7), torch.randn(7))) == 0.0  # 1-D tensors contribute 0
    a, b = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert float(match_loss([b, torch.ones(2)], [a, torch.zeros(2)])) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name,kw", [
    ("dm", {"iterations": 4}),
    ("dc", {"iterations": 4, "init": "noise"}),
    ("dsa", {"iterations": 4, "init": "noise"}),
    ("idc", {"iterations": 2, "inner_loop": 2, "lr_img": 0.05, "n_data": 64}),
])
def test_matching_loss_falls(digits, name, kw):
    cond = create_condenser(name)
    cfg = small_cfg(name, **kw)
    start = cond.condense(digits, 2, cfg.with_(iterations=0), seed=3)
    end = cond.condense(digits, 2, cfg, seed=3)
    assert end.images.shape == start.images.shape and not torch.equal(end.images, start.images)
    ctx = make_context(digits, 2, cfg, "digits", torch.device("cpu"))
    before = sum(cond.probe_loss(ctx, start.images, s) for s in (101, 102))
    after = sum(cond.probe_loss(ctx, end.images, s) for s in (101, 102))
    assert after < before, (name, before, after)
    assert end.provenance["method"] == name and end.provenance["seed"] == 3
    assert torch.equal(end.labels, torch.arange(10).repeat_interleave(2))


def test_dsa_siamese_pairs_share_the_transform(digits):
    cond = create_condenser("dsa")
    ctx = make_context(digits, 2, small_cfg("dsa"), "digits", torch.device("cpu"))
    real = ctx.real_x[:40]
    syn = real[:3].clone()
    for s in range(8):  # several draws cover several op groups
        g = torch.Generator().manual_seed(s)
        ar, as_ = cond._augment_pair(ctx, real, syn, g)
        assert torch.allclose(ar[:3], as_, atol=1e-6)  # same op, same parameters, different batch sizes
    g = torch.Generator().manual_seed(0)
    changed = [not torch.equal(cond._augment_pair(ctx, real, syn, g)[1], syn) for _ in range(4)]
    assert any(changed)
    ar, as_ = create_condenser("dc")._augment_pair(ctx, real, syn, g)
    assert ar is real and as_ is syn  # DC has no augmentation


def test_idc_stored_and_decoded_shapes(digits, tmp_path):
    cond = create_condenser("idc")
    cfg = small_cfg("idc", iterations=1, inner_loop=1, lr_img=0.05, n_data=32, factor=2)
    cs = cond.condense(digits, 3, cfg, seed=0)
    assert cs.images.shape == (30, 1, 8, 8) and cs.factor == 2 and cs.space == "pixel"
    dec = cs.decoded()
    assert dec.images.shape == (120, 1, 8, 8) and dec.class_counts() == [12] * 10
    back = CondensedSet.load(cs.save(tmp_path / "idc"))
    assert back.factor == 2 and torch.equal(back.images, cs.images)
    # mix init: decoding the initial tensor gives real images (nearest-downsampled 4x4, bilinear back up)
    init = cond.condense(digits, 1, cfg.with_(iterations=0), seed=0)
    assert 0.0 <= float(init.images.min()) and float(init.images.max()) <= 1.0


class Killed(Exception):
    pass


@pytest.mark.parametrize("name,kw", [("dm", {"iterations": 5}), ("dc", {"iterations": 5, "init": "noise"})])
def test_killed_run_resumes_to_the_same_result(digits, tmp_path, name, kw):
    cond = create_condenser(name)
    cfg = small_cfg(name, **kw).with_(checkpoint_every=2)
    full = cond.condense(digits, 2, cfg, seed=7)

    def kill_at_3(done, total, info):
        if done == 3:
            raise Killed

    with pytest.raises(Killed):
        cond.condense(digits, 2, cfg, seed=7, checkpoint_dir=tmp_path, progress=kill_at_3)
    assert (tmp_path / "checkpoint.pt").is_file()
    seen = []
    resumed = cond.condense(digits, 2, cfg, seed=7, checkpoint_dir=tmp_path, progress=lambda d, t, i: seen.append(d))
    assert seen == [3, 4, 5]  # restarted from the checkpoint after iteration 2
    assert torch.equal(resumed.images, full.images)
    with pytest.raises(ConfigError, match="different run"):
        cond.condense(digits, 2, cfg, seed=8, checkpoint_dir=tmp_path)


def test_periodic_validation_uses_a_carved_split(digits):
    cond = create_condenser("dm")
    cfg = small_cfg("dm", iterations=2, eval_every=2, eval_epochs=1, model="convnet_d2")
    cs = cond.condense(digits, 1, cfg.with_(model_kwargs={"width": 16}), seed=0)
    hist = cs.provenance["val_history"]
    assert len(hist) == 1 and hist[0][0] == 2 and 0.0 <= hist[0][1] <= 1.0
    assert cs.provenance["n_real_used"] < len(digits)  # the validation split came out of the training data


def test_bad_input_fails_before_any_work(digits, monkeypatch):
    import adapters.condense.goldfromores as gfo

    monkeypatch.setitem(gfo.CRITERIA._items, "LossConverge", lambda *a: pytest.fail("scored before checking"))
    dm = create_condenser("dm")
    cfg = small_cfg("dm", iterations=1)
    with pytest.raises(ConfigError, match="ipc 80 is larger than class"):
        dm.condense(digits, 80, cfg, pre_prune=PrePrune("LossConverge_large", drop_ratio=0.5), seed=0)
    with pytest.raises(ConfigError, match=r"outside \[0, 1\)"):
        dm.condense(digits, 1, cfg, pre_prune=PrePrune("Random", drop_ratio=1.0), seed=0)
    with pytest.raises(ConfigError, match="LossInit_large"):
        PrePrune("LossInt_large", drop_ratio=0.5)
    with pytest.raises(ConfigError, match="does not fit"):
        dm.condense(digits, 1, cfg.with_(model_kwargs={"width": 8, "depth": 4}), seed=0)
    with pytest.raises(ConfigError, match="factor"):
        create_condenser("idc").condense(digits, 1, small_cfg("idc", factor=9), seed=0)
    with pytest.raises(ConfigError, match="needs a DMConfig"):
        dm.condense(digits, 1, small_cfg("dc"), seed=0)


def test_pre_prune_in_the_library_and_cli(digits, tmp_path):
    from harness.cli.condense import add_commands

    cs = create_condenser("dm").condense(digits, 1, small_cfg("dm", iterations=1),
                                         pre_prune=PrePrune("Random", keep_ratio=0.5, seed=1), seed=0)
    info = cs.provenance["pre_prune_result"]
    assert info["n_after"] == len(digits) - sum(int(0.5 * n) for n in digits.class_counts())
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--out",
                              str(tmp_path / "out"), "--iterations", "1", "--param", 'model_kwargs={"width": 8}',
                              "--param", "batch_real=16", "--drop-criterion", "Random", "--drop-ratio", "0.3",
                              "--seed", "4"])
    assert args.func(args) == 0
    saved = CondensedSet.load(tmp_path / "out")
    assert saved.method == "DM" and saved.provenance["seed"] == 4
    assert saved.provenance["pre_prune"]["criterion"] == "Random"
    assert saved.provenance["config"]["model_kwargs"] == {"width": 8}
