"""Issue 7: the vmapped ensemble and the fast evaluator agree with the sequential Trainer."""

from __future__ import annotations

import statistics

import pytest
import torch

from harness.augment import EnsembleDSA
from harness.data import load_dataset
from harness.engine.ensemble import can_ensemble, ensemble_accuracy, ensemble_cutmix, fit_ensemble
from harness.engine.options import EngineOptions, bf16_supported, choose_path
from harness.engine.protocol import create_protocol
from harness.engine.trainer import Trainer, accuracy, seeded_model
from harness.errors import ConfigError
from harness.evaluate import evaluate, random_per_class
from harness.models import create_model

MODEL = "convnet_w32"  # depth 3 fits 8x8 digits (8 -> 4 -> 2 -> 1); width 32 keeps it fast


@pytest.fixture(autouse=True)
def _one_thread():
    """8x8 ConvNets are tiny: one thread avoids OpenMP barrier waits on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _build(model: str = MODEL):
    return lambda: create_model(model, num_classes=10, in_chans=1, img_size=8)


@pytest.mark.parametrize("name", ["vico-dc", "idc"])
def test_ensemble_matches_sequential_without_augmentation(digits, name):
    """Same seeds, no augmentation: same inits, same batches, same schedule -> same parameters (fp32)."""
    train, _ = digits
    x, y = train.normalized()[:160], train.labels[:160]
    over = {"epochs": 4} if name == "vico-dc" else {"epochs": 6, "augment": "none", "cutmix_p": 0.0}
    p = create_protocol(name, "digits", model=MODEL, batch_size=64, **over)
    seeds = [11, 12, 13]
    seq = [seeded_model(_build(), s) for s in seeds]
    for m, s in zip(seq, seeds):
        Trainer(m, p, seed=s).fit(x, y)
    ens = fit_ensemble([seeded_model(_build(), s) for s in seeds], p, seeds, x, y)
    for a, b in zip(seq, ens):
        for (name_a, pa), pb in zip(a.named_parameters(), b.parameters()):
            # float reassociation (grouped vs single convolutions) grows over the steps; 1e-4 ~ 0.2% of the weights
            torch.testing.assert_close(pa, pb, rtol=1e-3, atol=1e-4, msg=name_a)
    test_x = train.normalized()[160:360]
    test_y = train.labels[160:360]
    for acc_e, acc_s in zip(ensemble_accuracy(ens, test_x, test_y), [accuracy(m, test_x, test_y) for m in seq]):
        assert abs(acc_e - acc_s) <= 1 / 200 + 1e-9  # at most one test image flips


def test_batchnorm_models_fall_back(digits):
    train, test = digits
    bn = seeded_model(_build("convnet_bn"), 0)
    assert not can_ensemble(bn) and can_ensemble(seeded_model(_build(), 0))
    assert choose_path(torch.device("cuda"), bn, 10, "ensemble") == "sequential"
    assert choose_path(torch.device("cuda"), seeded_model(_build(), 0), 10, "auto") == "ensemble"
    assert choose_path(torch.device("cpu"), seeded_model(_build(), 0), 10, "auto") == "sequential"
    p = create_protocol("vico-dc", "digits", model="convnet_bn", epochs=1)
    with pytest.raises(ConfigError, match="BatchNorm"):
        fit_ensemble([bn], p, [0], train.normalized()[:20], train.labels[:20])
    sub = train.subset(random_per_class(train.labels, 2, seed=0))
    res = evaluate(sub, test, p, runs=2, options=EngineOptions(path="ensemble"))
    assert res.extra["path"] == "sequential" and len(res.accuracies) == 2 and "path_fallback" in res.extra


def test_dsa_ensemble_batch_is_deterministic_and_draws_groups_per_model():
    x = torch.randn(40 * 4, 3, 16, 16)
    dsa = EnsembleDSA("color_crop_cutout_flip_scale_rotate")
    a = dsa(x, 40, torch.Generator().manual_seed(5))
    b = dsa(x, 40, torch.Generator().manual_seed(5))
    c = dsa(x, 40, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    # flip vs cutout: a model's 4 samples are all flipped-or-kept (flip) or all carry a zero square (cutout)
    out = EnsembleDSA("flip_cutout")(x, 40, torch.Generator().manual_seed(0)).view(40, 4, 3, 16, 16)
    xs = x.view(40, 4, 3, 16, 16)
    cut = [bool((out[k] == 0).any()) for k in range(40)]
    for k in range(40):
        if not cut[k]:
            assert all(torch.equal(out[k, i], xs[k, i]) or torch.equal(out[k, i], xs[k, i].flip(2)) for i in range(4))
    assert 5 <= sum(cut) <= 35  # groups differ across models (a shared group would give 0 or 40)
    with pytest.raises(ConfigError):
        EnsembleDSA("color_warp")


def test_ensemble_cutmix():
    x = torch.randn(3, 8, 1, 8, 8)
    same, _, lam = ensemble_cutmix(x, 3, torch.Generator().manual_seed(0), 0.0, 1.0)
    assert torch.equal(same, x) and torch.equal(lam, torch.ones(3))
    mixed, partner, lam = ensemble_cutmix(x, 3, torch.Generator().manual_seed(0), 1.0, 1.0)
    assert partner.shape == (3, 8) and ((lam >= 0) & (lam <= 1)).all()
    for k in range(3):
        assert sorted(partner[k].tolist()) == list(range(8))
        kept = (mixed[k] == x[k]).float().mean()
        assert abs(float(kept) - float(lam[k])) < 0.2  # kept pixels ~ lam (partners may coincide)


def test_sequential_path_is_the_default_on_cpu_and_seeds_are_explicit(digits):
    train, test = digits
    sub = train.subset(random_per_class(train.labels, 3, seed=1))
    p = create_protocol("vico-dsa", "digits", model=MODEL, epochs=2)
    seq = evaluate(sub, test, p, runs=2, seed=3, options=EngineOptions(path="sequential"))
    ref = evaluate(sub, test, p, runs=2, seed=3)  # default options: auto = sequential on the CPU
    assert seq.accuracies == ref.accuracies and ref.extra["path"] == "sequential" and ref.seeds == (3, 4)
    # explicit seeds: the same runs, in the given order, aligned with the accuracies
    rev = evaluate(sub, test, p, seeds=[4, 3])
    assert rev.seeds == (4, 3) and rev.accuracies == ref.accuracies[::-1]
    native = bf16_supported(torch.device("cpu"))  # the fast default: bf16 where native, no compile for 3 epochs
    assert ref.extra["precision"] == ("bf16" if native else "fp32") and ref.extra["compile"] is False
    bf = evaluate(sub, test, p, runs=1, options=EngineOptions(precision="bf16"))
    assert bf.protocol["precision"] == bf.extra["precision"] in ("bf16", "fp32")
    with pytest.raises(ConfigError, match="seeds"):
        evaluate(sub, test, p, seeds=[1, 2], runs=3)
    with pytest.raises(ConfigError, match="own seed"):
        evaluate(sub, test, p, seeds=[1, 1])


def test_ensemble_reference_and_sequential_agree_statistically(digits):
    """DSA on, IPC 10, K 4, 41 epochs of batch 20: the three evaluators' mean accuracies agree within the run spread."""
    train, test = digits
    sub = train.subset(random_per_class(train.labels, 10, seed=0))
    p = create_protocol("vico-dsa", "digits", model=MODEL, epochs=40, batch_size=20)
    res = {
        "ensemble": evaluate(sub, test, p, runs=4, seed=0, options=EngineOptions(path="ensemble")),
        "sequential": evaluate(sub, test, p, runs=4, seed=0, options=EngineOptions(path="sequential")),
    }
    means = {k: r.mean for k, r in res.items()}
    spread = max(statistics.pstdev(r.accuracies) for r in res.values()) + 0.03
    assert min(means.values()) > 0.5, means
    assert max(means.values()) - min(means.values()) < 2 * spread, (means, spread)


def test_ensemble_bf16_and_cutmix_run(digits):
    """The CUDA recipe (ensemble + bf16 autocast) and IDC's CutMix + multistep run on the CPU too."""
    train, test = digits
    sub = train.subset(random_per_class(train.labels, 5, seed=0))
    p = create_protocol("idc", "digits", model=MODEL, epochs=3)
    res = evaluate(sub, test, p, runs=3, options=EngineOptions(path="ensemble", precision="bf16"))
    assert res.extra["path"] == "ensemble" and len(res.accuracies) == 3
    assert res.protocol["precision"] in ("bf16", "fp32")  # fp32 where the CPU has no native bf16
    again = evaluate(sub, test, p, runs=3, options=EngineOptions(path="ensemble", precision="bf16"))
    assert again.accuracies == res.accuracies  # deterministic given the seeds
