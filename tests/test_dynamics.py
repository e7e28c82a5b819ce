"""DynamicsRecorder, the on-disk format, resume after a kill, and TDDS/DUAL dump import."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.dynamics import STATS, Dynamics, DynamicsRecorder, import_logit_dumps, record_dynamics
from harness.errors import ConfigError, FormatError

LN3 = math.log(3.0)


def _feed(rec: DynamicsRecorder, logits: np.ndarray, labels: np.ndarray, batch: int, seed: int = 0) -> None:
    """Feed ``(E, N, C)`` logits to a recorder in a shuffled loader order, like Trainer does."""
    g = np.random.default_rng(seed)
    for e in range(logits.shape[0]):
        order = g.permutation(labels.size)
        for s in range(0, labels.size, batch):
            i = order[s:s + batch]
            rec.on_batch(e, torch.from_numpy(i), torch.from_numpy(logits[e, i]), torch.from_numpy(labels[i]))
        rec.on_epoch_end(e, None)


def test_stats_hand_computed():
    # one sample, label 0, two classes. Epoch 0: z = [ln 3, 0] -> p = [0.75, 0.25]; epoch 1: z = [0, ln 3].
    logits = np.array([[[LN3, 0.0]], [[0.0, LN3]]], np.float32)
    dyn = Dynamics.from_logits(logits, np.array([0]), 2)
    expect = {
        "target_prob": [0.75, 0.25],
        "logit_margin": [LN3, -LN3],  # 1.098612, -1.098612
        "prob_margin": [0.5, -0.5],
        "loss": [0.287682, 1.386294],  # ln(4/3), ln 4
        "correct": [1.0, 0.0],
        "el2n": [0.353553, 1.060660],  # sqrt(2 * 0.25^2), sqrt(2 * 0.75^2)
        "entropy": [0.562335, 0.562335],  # -(0.75 ln 0.75 + 0.25 ln 0.25)
        # |0.25 (ln 0.25 - ln 0.75)| + |0.75 (ln 0.75 - ln 0.25)| = ln 3
        "kl_prev": [np.nan, 1.098612],
    }
    for name, vals in expect.items():
        np.testing.assert_allclose(dyn.stat(name)[:, 0], vals, atol=2e-6, err_msg=name)
    assert dyn.epochs == 2 and dyn.stats == STATS


def test_recorder_dataset_order_under_shuffling():
    rng = np.random.default_rng(1)
    n, c, e = 53, 5, 3
    logits = rng.normal(size=(e, n, c)).astype(np.float32) * 3
    labels = rng.integers(0, c, n)
    rec = DynamicsRecorder(n, c, keep_logits=True)
    _feed(rec, logits, labels, batch=7, seed=3)
    shuffled = rec.dynamics()
    # reference: computed per sample, in dataset order, with numpy
    p = np.exp(logits - logits.max(2, keepdims=True))
    p /= p.sum(2, keepdims=True)
    py = p[:, np.arange(n), labels]
    np.testing.assert_allclose(shuffled.stat("target_prob"), py, rtol=1e-5)
    np.testing.assert_allclose(shuffled.logits(), logits)
    np.testing.assert_array_equal(shuffled.labels, labels)
    kl = np.abs(p[1:] * (np.log(p[1:] + 1e-8) - np.log(p[:-1] + 1e-8))).sum(2)
    np.testing.assert_allclose(shuffled.stat("kl_prev")[1:], kl, rtol=1e-4)
    ordered = Dynamics.from_logits(logits, labels, c)
    for s in STATS:
        np.testing.assert_allclose(shuffled.stat(s), ordered.stat(s), rtol=1e-6, atol=1e-6, equal_nan=True)


def test_unseen_sample_is_nan():
    rec = DynamicsRecorder(3, 2)
    rec.on_batch(0, torch.tensor([0, 2]), torch.zeros(2, 2), torch.tensor([0, 1]))
    rec.on_epoch_end(0, None)
    tp = rec.dynamics().stat("target_prob")[0]
    assert tp[0] == 0.5 and np.isnan(tp[1]) and tp[2] == 0.5


def test_on_disk_memmap_and_meta(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 20, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 20)
    rec = DynamicsRecorder(20, 4, out_dir=tmp_path / "d", meta={"epochs": 2, "tag": "x"}, labels=labels)
    _feed(rec, logits, labels, batch=6)  # 3 epochs > capacity 2: the memmaps grow
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["epochs_done"] == 3 and meta["config"]["tag"] == "x"
    dyn = Dynamics.open(tmp_path / "d")
    assert isinstance(dyn.stat("loss"), np.memmap) and dyn.stat("loss").shape == (3, 20)
    ref = Dynamics.from_logits(logits, labels, 4)
    for s in STATS:
        np.testing.assert_allclose(dyn.stat(s), ref.stat(s), rtol=1e-6, equal_nan=True)
    with pytest.raises(ConfigError, match="different run"):
        DynamicsRecorder(20, 4, out_dir=tmp_path / "d", meta={"epochs": 2, "tag": "y"})
    with pytest.raises(FormatError, match="meta.json"):
        Dynamics.open(tmp_path)


def test_from_arrays_checks():
    d = Dynamics.from_arrays([0, 1], 2, loss=[[1.0, 2.0]])
    assert d.epochs == 1
    with pytest.raises(FormatError, match="no 'el2n'"):
        d.stat("el2n")
    with pytest.raises(FormatError):
        Dynamics.from_arrays([0, 1], 2, loss=[[1.0, 2.0, 3.0]])
    with pytest.raises(ConfigError):
        Dynamics.from_arrays([0, 1], 2, bogus=[[1.0, 2.0]])


# --- record_dynamics: real training, kill and resume ------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from harness.data import load_dataset

    return load_dataset("digits", "train")


def _proto(epochs=4):
    from harness.engine.protocol import create_protocol

    return create_protocol("ccs", "digits", model="dc_mlp", epochs=epochs, batch_size=256)


class Killed(Exception):
    pass


def _kill_at(epoch):
    def progress(done, total):
        if done == epoch:
            raise Killed

    return progress


def test_record_resume_after_kill_matches_uninterrupted(tmp_path, digits):
    full = record_dynamics(digits, _proto(), seed=0, out_dir=tmp_path / "full")
    assert full.epochs == 4 and full.meta["finished"]
    run = tmp_path / "run"
    with pytest.raises(Killed):
        record_dynamics(digits, _proto(), seed=0, out_dir=run, progress=_kill_at(2))
    meta = json.loads((run / "meta.json").read_text())
    assert meta["epochs_done"] == 2 and not meta["finished"]
    assert Dynamics.open(run).epochs == 2
    resumed = record_dynamics(digits, _proto(), seed=0, out_dir=run)
    assert resumed.epochs == 4
    for s in STATS:
        np.testing.assert_allclose(resumed.stat(s), full.stat(s), rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=s)
    # a finished run with the same config comes back without training (progress would raise)
    again = record_dynamics(digits, _proto(), seed=0, out_dir=run, progress=_kill_at(1))
    assert again.epochs == 4
    # a different config in the same directory is refused
    with pytest.raises(ConfigError, match="different run"):
        record_dynamics(digits, _proto(), seed=1, out_dir=run)


def test_resume_when_killed_between_checkpoint_and_commit(tmp_path, digits):
    full = record_dynamics(digits, _proto(3), seed=0, out_dir=None)
    run = tmp_path / "run"
    with pytest.raises(Killed):
        record_dynamics(digits, _proto(3), seed=0, out_dir=run, progress=_kill_at(2))
    # simulate a kill after the epoch-2 checkpoint but before meta.json was committed
    meta = json.loads((run / "meta.json").read_text())
    meta["epochs_done"] = 1
    (run / "meta.json").write_text(json.dumps(meta))
    resumed = record_dynamics(digits, _proto(3), seed=0, out_dir=run)
    assert resumed.epochs == 3
    np.testing.assert_allclose(resumed.stat("kl_prev"), full.stat("kl_prev"), rtol=1e-5, atol=1e-6, equal_nan=True)


# --- TDDS/DUAL dumps ----------------------------------------------------------------------------------
def _write_dumps(d, logits, seed=0):
    d.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    for e in range(logits.shape[0]):
        order = g.permutation(logits.shape[1])
        np.save(d / f"{e}_Output.npy", logits[e, order])
        np.save(d / f"{e}_Index.npy", order)
        np.save(d / f"{e}_Loss.npy", np.zeros(len(order), np.float32))  # unused (TDDS issue #4)


def test_import_dumps_reorders_by_index(tmp_path):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 30, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    _write_dumps(tmp_path / "npy", logits)
    dyn = import_logit_dumps(tmp_path / "npy", labels, 3, out_dir=tmp_path / "dyn")
    ref = Dynamics.from_logits(logits, labels, 3)
    assert dyn.epochs == 4
    for s in STATS:
        np.testing.assert_allclose(dyn.stat(s), ref.stat(s), rtol=1e-6, equal_nan=True)
    assert Dynamics.open(tmp_path / "dyn").epochs == 4


@pytest.mark.parametrize("case, match", [
    ("missing_epoch", r"epochs \[1\] missing"),
    ("missing_index", "has no 1_Index"),
    ("duplicate", "duplicate indices"),
    ("n_mismatch", "expected \\(30, 3\\)"),
    ("c_mismatch", "4 classes, expected 3"),
])
def test_import_dump_errors(tmp_path, case, match):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 30, 3)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    d = tmp_path / "npy"
    _write_dumps(d, logits)
    if case == "missing_epoch":
        (d / "1_Output.npy").unlink()
    elif case == "missing_index":
        (d / "1_Index.npy").unlink()
    elif case == "duplicate":
        idx = np.load(d / "2_Index.npy")
        idx[0] = idx[1]
        np.save(d / "2_Index.npy", idx)
    elif case == "n_mismatch":
        np.save(d / "0_Output.npy", logits[0, :29])
    elif case == "c_mismatch":
        np.save(d / "0_Output.npy", np.zeros((30, 4), np.float32))
    with pytest.raises(FormatError, match=match):
        import_logit_dumps(d, labels, 3)
