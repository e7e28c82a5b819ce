"""YOCO shrink: balanced selection of IPC_T x factor^2 lowest-LBPE images per class, the rule table,
provenance, the CLI, bad inputs, and evaluation preparation (decode + ZCA refit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_subcommands

from condensed import CondensedSet, load_condensed
from condensed.shrink import ccs_cutoff, lbpe_defaults, prepare_for_eval, resolve_rule, shrink
from harness.cli.sets import add_commands
from harness.dynamics import Dynamics
from harness.errors import ConfigError

K = 10  # classes of the embedded 'digits' dataset (1 x 8 x 8)


def _idc_like(ipc: int = 2, factor: int = 2, seed: int = 0) -> CondensedSet:
    g = torch.Generator().manual_seed(seed)
    return CondensedSet(images=torch.rand(ipc * K, 1, 8, 8, generator=g), labels=torch.arange(K).repeat_interleave(ipc),
                        num_classes=K, dataset="digits", method="IDC", space="pixel", mean=(0.3053,), std=(0.3759,),
                        factor=factor)


def _cli(argv: list[str]) -> str:
    return run_subcommands(add_commands, argv)


def test_yoco_balanced_keeps_lowest_lbpe_per_class():
    cs = _idc_like()  # 2 stored/class, factor 2 -> 8 decoded/class, 80 in all
    labels = cs.decoded().labels.numpy()
    rng = np.random.default_rng(1)
    epochs = 6
    el2n = rng.random((epochs, 80)).astype(np.float32)
    correct = np.zeros((epochs, 80), np.float32)
    correct[[1, 4]] = 1  # the two most accurate epochs are 1 and 4
    dyn = Dynamics.from_arrays(labels, K, el2n=el2n, correct=correct)
    small = shrink(cs, 1, rule="yoco", dynamics=[dyn], stop_epoch=6, topk=2)
    lbpe = el2n[1] + el2n[4]
    expected = np.sort(np.concatenate([np.flatnonzero(labels == c)[np.argsort(lbpe[labels == c])[:4]]
                                       for c in range(K)]))
    assert small.provenance["kept_indices"] == expected.tolist()
    assert small.class_counts() == [4] * K and small.factor == 1  # IPC_T x factor^2 = 1 x 4
    np.testing.assert_allclose(small.provenance["scores"], lbpe, rtol=1e-6)
    p = small.provenance
    assert p["shrunk_from"]["checksum"] == cs.checksum() and p["params"]["topk"] == 2 and p["storage_ipc"] == 1
    torch.testing.assert_close(small.images, cs.decoded().images[torch.as_tensor(expected)])
    # hard / imbalanced variants follow the suffix grammar
    hard = shrink(cs, 1, rule="yoco_hard", dynamics=[dyn], stop_epoch=6, topk=2)
    assert set(hard.provenance["kept_indices"]).isdisjoint(expected)
    imb = shrink(cs, 1, rule="yoco_imbalance", dynamics=[dyn], stop_epoch=6, topk=2)
    assert sorted(imb.provenance["kept_indices"]) == np.sort(np.argsort(lbpe, kind="stable")[:40]).tolist()


def test_rule_table_and_defaults():
    assert resolve_rule("yoco").balance and resolve_rule("yoco").keep == "easy"
    assert resolve_rule("el2n").keep == "hard" and not resolve_rule("el2n").balance
    assert resolve_rule("ccs").name == "ccs_yoco"
    assert resolve_rule("ccs_balance").name == "ccs_yoco_balance" and resolve_rule("ccs_balance").balance
    assert resolve_rule("ccs_yoco_balance").name == "ccs_yoco_balance"
    assert not resolve_rule("ccs_imbalance").balance
    assert resolve_rule("random_balance").balance
    for name in ("random", "ssp", "entropy", "aum", "forgetting", "el2n", "ccs", "yoco", "aum_easy",
                 "forgetting_hard_balance", "el2n_easy_imbalance", "ssp_balance"):
        resolve_rule(name)
    assert lbpe_defaults("IDC", "cifar10") == (100, 10) and lbpe_defaults("IDC", "cifar100") == (200, 10)
    assert lbpe_defaults("MTT", "cifar10") == (10, 3) and lbpe_defaults("KIP", "cifar10") == (50, 3)
    assert lbpe_defaults("DC", "cifar10") == (100, 10) and lbpe_defaults("DSA", "cifar10") == (100, 3)
    assert ccs_cutoff("cifar10", 10, 1) == 0.3 and ccs_cutoff("cifar100", 10, 2) == 0.4


@pytest.mark.parametrize("rule", ["yoco", "random", "random_balance", "el2n", "aum", "forgetting", "entropy",
                                  "ssp", "ccs"])
def test_trained_dynamics_every_rule(rule: str):
    cs = _idc_like(ipc=2, factor=2)
    small = shrink(cs, 1, rule=rule, epochs=2, seed=3)
    assert len(small.labels) == 40 and small.factor == 1
    if resolve_rule(rule).balance:
        assert small.class_counts() == [4] * K
    assert small.provenance["params"].get("protocol", {}).get("epochs", 2) == 2


def test_cli_shrink_and_bad_target(tmp_path: Path):
    src = tmp_path / "src"
    _idc_like().save(src)
    out = tmp_path / "small"
    text = _cli(["shrink", str(src), "--to-ipc", "1", "--rule", "yoco", "--out", str(out), "--epochs", "2",
                 "--stop-epoch", "2", "--topk", "1"])
    assert "-> 4" in text or "per class [4" in text
    small = load_condensed(out)
    assert small.class_counts() == [4] * K and small.provenance["rule"] == "yoco"
    bad = tmp_path / "bad"
    with pytest.raises(ConfigError, match="target IPC 3"):
        _cli(["shrink", str(src), "--to-ipc", "3", "--out", str(bad)])
    assert not bad.exists()


def test_prepare_for_eval_decodes_and_refits_zca():
    from harness.data import load_dataset
    from harness.engine.protocol import create_protocol
    from harness.evaluate import evaluate

    li, zca = prepare_for_eval(_idc_like())
    assert zca is None and len(li) == 80 and li.space == "pixel"
    real = load_dataset("digits", "train")
    from harness.augment import ZCA

    z = ZCA(0.1).fit(real.normalized())
    picks = torch.cat([torch.nonzero(real.labels == c).flatten()[:2] for c in range(K)])
    zs = CondensedSet(images=z(real.subset(picks).normalized()), labels=real.labels[picks], num_classes=K,
                      dataset="digits", method="KIP", space="zca", mean=real.mean, std=real.std,
                      zca={"eps": 0.1, "fit": "normalized train"})
    li, zca = prepare_for_eval(zs)
    assert zca is not None and li.space == "zca"
    torch.testing.assert_close(zca(real.subset(picks).normalized()), zs.images)
    proto = create_protocol("vico-dc", "digits", epochs=2)
    res = evaluate(li, load_dataset("digits", "test"), proto, runs=1, zca=zca)
    assert 0.0 <= res.mean <= 1.0


def test_yoco_rule_names_with_underscores_and_suffixes():
    # YOCO names AUM "accumulated_margin"; its suffixed forms must resolve too (not split at the first "_")
    assert resolve_rule("accumulated_margin").score == "aum"
    r = resolve_rule("accumulated_margin_easy")
    assert r.score == "aum" and r.keep == "easy"
    assert resolve_rule("ccs").name == "ccs_yoco" and resolve_rule("ccs_yoco").name == "ccs_yoco"
