"""Issue 14: fast by default, exact on request, and no training the answer does not read.

- ``EngineOptions()`` is ``auto`` (bf16 where native, compile by the measured break-even), resolved per run and
  recorded as resolved values; ``EngineOptions.exact()`` / ``--exact`` is fp32, eager, sequential: the protocol's
  numbers bit for bit (the previous default, ``precision=None, compile=False``).
- ``record_dynamics(until_epoch=k)`` rows are the first ``k`` rows of a full-length recording, bit for bit, and a
  cut recording resumes to the full one; shrink and the coreset flow record only the epochs their score reads,
  with the same selection as from the full-length recording.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from condensed import CondensedSet
from condensed.shrink import epochs_read, resolve_rule, shrink
from harness.cli.common import engine_args, engine_options
from harness.data import load_dataset
from harness.dynamics import STATS, Dynamics, record_dynamics
from harness.engine import create_protocol
from harness.engine import options as O
from harness.engine.options import COMPILE_RULE, EngineOptions, choose_compile, forward_flops, resolve_precision
from harness.errors import ConfigError
from harness.evaluate import evaluate
from harness.pruning.recipes import parse_recipe

K = 10


@pytest.fixture(scope="module")
def digits():
    tr = load_dataset("digits", "train")
    te = load_dataset("digits", "test")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(tr), generator=g)[:200]
    return tr.subset(idx), te


# --- options -----------------------------------------------------------------------------------------
def test_default_is_auto_and_exact_is_fp32_eager_sequential():
    assert EngineOptions().as_dict() == {"path": "auto", "precision": "auto", "compile": "auto"}
    ex = EngineOptions.exact()
    assert ex.as_dict() == {"path": "sequential", "precision": "fp32", "compile": False} and ex.is_exact
    assert not EngineOptions().is_exact
    for bad in ({"path": "vmap"}, {"precision": "fp16"}, {"compile": "yes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            EngineOptions(**bad)


def _parse(argv: list[str]) -> EngineOptions:
    p = argparse.ArgumentParser()
    engine_args(p)
    return engine_options(p.parse_args(argv))


def test_cli_engine_flags():
    assert _parse([]) == EngineOptions()
    assert _parse(["--exact"]) == EngineOptions.exact()
    assert _parse(["--compile", "off", "--precision", "fp32"]) == EngineOptions(precision="fp32", compile=False)
    assert _parse(["--compile", "on"]).compile is True
    with pytest.raises(ConfigError, match="--exact .*--precision"):
        _parse(["--exact", "--precision", "bf16"])
    with pytest.raises(SystemExit):
        _parse(["--compile", "maybe"])


def test_auto_precision_follows_native_bf16(monkeypatch):
    proto = create_protocol("vico-dc", "mnist")
    monkeypatch.setattr(O, "bf16_supported", lambda device: True)
    p, notes = resolve_precision(proto, EngineOptions(), "cpu")
    assert p.precision == "bf16" and notes["precision_reason"].startswith("auto: native")
    monkeypatch.setattr(O, "bf16_supported", lambda device: False)
    p, notes = resolve_precision(proto, EngineOptions(), "cpu")
    assert p.precision == "fp32" and "precision_fallback" not in notes  # auto is not a request
    p, notes = resolve_precision(proto, EngineOptions(precision="bf16"), "cpu")
    assert p.precision == "fp32" and "precision_fallback" in notes
    p, _ = resolve_precision(proto, EngineOptions.exact(), "cpu")
    assert p.precision == "fp32"


def test_compile_rule_by_hand():
    # ConvNet-3 (width 128, instancenorm) on 3x32x32, 10 classes, by hand (2 FLOPs per multiply-add):
    # conv1 2*3*9*128*32*32, conv2 2*128*9*128*16*16, conv3 2*128*9*128*8*8, fc 2*2048*10
    hand = 2 * 3 * 9 * 128 * 1024 + 2 * 128 * 9 * 128 * 256 + 2 * 128 * 9 * 128 * 64 + 2 * 2048 * 10
    assert forward_flops("convnet", num_classes=10, in_chans=3, img_size=32) == hand
    assert COMPILE_RULE.break_even_s == pytest.approx(150.0)
    # 150 s of eager bf16 training at 160 GFLOP/s = 2.4e13 FLOPs: just below stays eager, at it compiles
    below, at = 2.4e13 * 0.99, 2.4e13
    assert choose_compile(EngineOptions(), "cpu", precision="bf16", train_flops=below)[0] is False
    on, notes = choose_compile(EngineOptions(), "cpu", precision="bf16", train_flops=at)
    assert on is True and notes["expected_eager_s"] == pytest.approx(150.0)
    assert "auto: long run" in notes["compile_reason"]
    # fp32 is slower per FLOP, so the same work passes the break-even sooner
    assert choose_compile(EngineOptions(), "cpu", precision="fp32", train_flops=below)[0] is True
    assert choose_compile(EngineOptions(), "cpu", precision="bf16", train_flops=None)[0] is False
    assert choose_compile(EngineOptions(), "cuda", precision="bf16", train_flops=1e20)[0] is False  # not measured there
    assert choose_compile(EngineOptions.exact(), "cpu", precision="fp32", train_flops=1e20) == (
        False, {"compile_reason": "exact"})
    assert choose_compile(EngineOptions(compile=True), "cpu", precision="fp32", train_flops=0.0)[0] is True


def test_evaluate_records_what_ran_and_exact_is_the_old_default(digits):
    tr, te = digits
    proto = create_protocol("vico-dc", "digits", epochs=3)
    fast = evaluate(tr, te, proto, runs=1, seed=0)
    for key in ("path", "precision", "precision_reason", "compile", "compile_reason"):
        assert key in fast.extra
    assert fast.extra["precision"] in ("fp32", "bf16") and isinstance(fast.extra["compile"], bool)
    assert fast.extra["compile"] is False  # 3 epochs of 200 8x8 images: far below the break-even
    ex = evaluate(tr, te, proto, runs=2, seed=0, options=EngineOptions.exact())
    old = evaluate(tr, te, proto, runs=2, seed=0, options=EngineOptions(path="sequential", precision=None,
                                                                            compile=False))
    assert ex.accuracies == old.accuracies and ex.extra["precision"] == "fp32" and ex.extra["compile"] is False


# --- train only what the answer reads ----------------------------------------------------------------------
def _stats(dyn: Dynamics) -> dict[str, np.ndarray]:
    return {s: np.array(dyn.stat(s)) for s in STATS}


def test_cut_recording_is_the_head_of_the_full_one_and_resumes(digits, tmp_path):
    tr, _ = digits
    proto = create_protocol("vico-dc", "digits", epochs=7)  # 8 epochs, lr x0.1 after epoch 4
    ex = EngineOptions.exact()
    full = record_dynamics(tr, proto, seed=3, options=ex)
    cut = record_dynamics(tr, proto, seed=3, options=ex, until_epoch=5, out_dir=tmp_path / "d")
    assert cut.epochs == 5 and full.epochs == 8
    for s, v in _stats(cut).items():
        np.testing.assert_array_equal(v, _stats(full)[s][:5], err_msg=s)
    again = record_dynamics(tr, proto, seed=3, options=ex, until_epoch=3, out_dir=tmp_path / "d")  # enough: reused
    assert again.epochs == 3
    resumed = record_dynamics(tr, proto, seed=3, options=ex, out_dir=tmp_path / "d")  # needs all: resumes at 5
    for s, v in _stats(resumed).items():
        np.testing.assert_array_equal(v, _stats(full)[s], err_msg=s)
    with pytest.raises(ConfigError, match="until_epoch"):
        record_dynamics(tr, proto, seed=3, options=ex, until_epoch=0)
    with pytest.raises(ConfigError, match="final model"):
        record_dynamics(tr, proto, seed=3, options=ex, until_epoch=2, return_model=True)


def test_epochs_read_by_hand():
    total = 1000
    assert epochs_read(resolve_rule("yoco"), stop_epoch=100, total_epochs=total) == 100
    assert epochs_read(resolve_rule("el2n"), stop_epoch=100, total_epochs=total) == 10
    assert epochs_read(resolve_rule("ccs"), stop_epoch=100, total_epochs=total) == 10  # YOCO's CCS: EL2N 0-9
    assert epochs_read(resolve_rule("entropy"), stop_epoch=100, total_epochs=total) is None  # final model
    assert epochs_read(resolve_rule("yoco"), stop_epoch=100, total_epochs=40) == 40
    # coreset recipes: DUAL reads its window (T = 30), TDDS its T, random nothing, k-means the final model
    assert parse_recipe("dual").epochs_needed(200) == 30
    assert parse_recipe("tdds").epochs_needed(200) == 30
    assert parse_recipe("random").epochs_needed(200) == 0
    assert parse_recipe("ssp").epochs_needed(200) is None
    assert parse_recipe("forgetting").epochs_needed(200) is None  # all epochs
    assert parse_recipe("el2n").epochs_needed(200) == 10


def _set() -> CondensedSet:
    tr = load_dataset("digits", "train")
    idx = torch.cat([torch.nonzero(tr.labels == c).flatten()[:4] for c in range(K)])
    return CondensedSet(images=tr.images[idx].float() / 255 if tr.images.dtype == torch.uint8 else tr.images[idx],
                        labels=tr.labels[idx], num_classes=K, dataset="digits", method="DC", space="pixel",
                        mean=(0.3053,), std=(0.3759,), factor=1)


def test_shrink_records_only_the_lbpe_epochs_and_selects_as_the_full_run():
    cs = _set()
    ex = EngineOptions.exact()
    small = shrink(cs, 2, rule="yoco", epochs=11, stop_epoch=4, topk=2, seed=5, options=ex)
    assert small.provenance["params"]["dynamics_epochs_recorded"] == 4
    proto = create_protocol("yoco", "digits", epochs=11)
    full = record_dynamics(cs.decoded().to_labeled(), proto, seed=5, options=ex)
    assert full.epochs > 4
    ref = shrink(cs, 2, rule="yoco", epochs=11, stop_epoch=4, topk=2, seed=5, dynamics=[full])
    assert small.provenance["kept_indices"] == ref.provenance["kept_indices"]
    np.testing.assert_array_equal(small.provenance["scores"], ref.provenance["scores"])
