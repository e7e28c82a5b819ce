"""Every score against hand-computed values on tiny dynamics, incl. the reference-code bug cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.dynamics import Dynamics, DynamicsRecorder
from harness.errors import ConfigError
from harness.pruning.scores import (
    FinalEval,
    compute_score,
    create_score,
    get_score,
    list_scores,
    load_scores,
    mean_target_prob,
    save_scores,
)
from harness.registry import UnknownNameError

SQ2 = math.sqrt(2)
NAN = float("nan")


def D(**stats):
    n = len(next(iter(stats.values()))[0])
    return Dynamics.from_arrays(np.zeros(n, np.int64), 2, **stats)


def test_registry_names_directions_params():
    required = {"forgetting", "el2n", "aum", "entropy", "loss", "lbpe", "tdds", "dual", "dynunc", "loss_init",
                "loss_converge"}
    assert required <= set(list_scores())
    assert get_score("aum").direction == "low_hard"
    assert all(get_score(n).direction == "high_hard" for n in required - {"aum"})
    assert "Pleiss" in get_score("aum").paper and "sum over all epochs" in get_score("aum").doc
    with pytest.raises(UnknownNameError, match="did you mean forgetting"):
        get_score("forgeting")
    with pytest.raises(ConfigError, match="unknown parameters"):
        create_score("tdds", window=3)


def test_forgetting_counts_and_never_learned():
    # epochs x samples. s0: 1 0 1 0 1 -> 2 events; s1 never correct; s2 always; s3: 0 1 1 0 0 -> 1 event
    correct = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0], [1, 0, 1, 0]], np.float32)
    d = D(correct=correct)
    np.testing.assert_array_equal(compute_score("forgetting", d), [2, 0, 0, 1])  # CCS: never-learned = 0
    np.testing.assert_array_equal(compute_score("forgetting", d, never_learned="max"), [2, 5, 0, 1])  # Toneva
    np.testing.assert_array_equal(compute_score("forgetting", d, start=2), [1, 0, 0, 1])


def test_el2n_window_reduce_and_runs():
    el = np.array([[0.1, 1.0], [0.3, 1.0], [0.5, 0.0]], np.float32)
    d = D(el2n=el)
    np.testing.assert_allclose(compute_score("el2n", d), [0.9, 2.0], rtol=1e-6)  # end=10 clipped to 3 epochs
    np.testing.assert_allclose(compute_score("el2n", d, start=0, end=2), [0.4, 2.0], rtol=1e-6)
    np.testing.assert_allclose(compute_score("el2n", d, start=0, end=2, reduce="mean"), [0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(compute_score("el2n", d, start=2, end=3), [0.5, 0.0], rtol=1e-6)  # DUAL: one epoch
    d2 = D(el2n=el * 3)
    np.testing.assert_allclose(compute_score("el2n", [d, d2]), [1.8, 4.0], rtol=1e-6)  # mean over runs
    with pytest.raises(ConfigError, match="window"):
        compute_score("el2n", d, start=3, end=3)


def test_aum_accumulates_over_all_epochs_not_last_only():
    # s0 is easy for two epochs and dips at the end; s1 is hard then easy at the end
    pm = np.array([[0.9, -0.5], [0.9, -0.5], [-0.1, 0.8]], np.float32)
    lm = np.array([[2.0, -1.0], [4.0, -1.0], [0.0, 5.0]], np.float32)
    d = D(prob_margin=pm, logit_margin=lm)
    ours = compute_score("aum", d)
    np.testing.assert_allclose(ours, [1.7, -0.2], rtol=1e-6)  # CCS accumulated_margin
    assert ours[1] < ours[0]  # s1 is the hard one (low AUM)
    dual_bug = compute_score("aum", d, start=-1)  # DUAL: accumulator reset each epoch -> last epoch only
    np.testing.assert_allclose(dual_bug, [-0.1, 0.8], rtol=1e-6)
    assert dual_bug[0] < dual_bug[1]  # the bug flips the ranking
    np.testing.assert_allclose(compute_score("aum", d, margin="logit", reduce="mean"), [2.0, 1.0])  # Pleiss


def test_entropy_loss_goldfromores():
    ent = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    loss = np.array([[2.0, 1.0], [1.0, 3.0], [0.5, 0.1], [0.2, 0.4]], np.float32)
    np.testing.assert_allclose(compute_score("entropy", D(entropy=ent)), [0.3, 0.4], rtol=1e-6)
    np.testing.assert_allclose(compute_score("entropy", D(entropy=ent), epoch=0), [0.1, 0.2], rtol=1e-6)
    d = D(loss=loss)
    np.testing.assert_allclose(compute_score("loss", d), [0.2, 0.4], rtol=1e-6)
    np.testing.assert_allclose(compute_score("loss_init", d, epochs=2), [1.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(compute_score("loss_init", d), [1.5, 2.0], rtol=1e-6)  # default: first 2 epochs
    np.testing.assert_allclose(compute_score("loss_init", d, epochs=1), [2.0, 1.0], rtol=1e-6)
    with pytest.raises(ConfigError, match="hold 4 epochs"):
        compute_score("loss_init", d, epochs=5)
    # LossConverge is the final model's eval-mode loss: a FinalEval, never training dynamics
    ev = FinalEval(np.array([[0.0, math.log(3.0)], [2.0, 2.0]], np.float32), np.array([1, 0]))
    np.testing.assert_allclose(compute_score("loss_converge", ev), [math.log(4 / 3), math.log(2)], rtol=1e-6)
    with pytest.raises(ConfigError, match="final model's eval-mode outputs"):
        compute_score("loss_converge", d)
    with pytest.raises(ConfigError, match="reads training dynamics"):
        compute_score("loss", ev)
    assert "loss_converge" in list_scores(needs="final_eval") and "loss_converge" not in list_scores(needs="dynamics")


def test_lbpe_topk_epochs_by_correct_count():
    n, e = 3, 5
    # correct counts per epoch: [1, 3, 2, 3, 0]
    correct = np.array([[1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 0, 0]], np.float32)
    el = np.array([[ep + 0.1 * i for i in range(n)] for ep in range(e)], np.float32)  # el2n[e, i] = e + 0.1 i
    d = D(correct=correct, el2n=el)
    # stop_epoch 4, K 2 -> epochs 1 and 3 (3 correct each): (1 + 0.1i) + (3 + 0.1i)
    np.testing.assert_allclose(compute_score("lbpe", d, stop_epoch=4, k=2), [4.0, 4.2, 4.4], rtol=1e-6)
    # stop_epoch 3 -> epochs 1 (3) and 2 (2)
    np.testing.assert_allclose(compute_score("lbpe", d, stop_epoch=3, k=2), [3.0, 3.2, 3.4], rtol=1e-6)
    # tie between epochs 1 and 3 with K 1 -> the earlier epoch
    np.testing.assert_allclose(compute_score("lbpe", d, stop_epoch=5, k=1), [1.0, 1.1, 1.2], rtol=1e-6)
    # two runs are averaged
    np.testing.assert_allclose(compute_score("lbpe", [d, d], stop_epoch=4, k=2), [4.0, 4.2, 4.4], rtol=1e-6)


def test_tdds_sliding_windows_hand_computed():
    # T 5, J 3, beta 0.5: windows k = 0, 1, 2 use kl_prev at epochs (1, 2), (2, 3), (3, 4);
    # s_k = ||d - mean d||_2 = |a - b| / sqrt 2; weights beta (1 - beta)^(T - J - k) = 0.125, 0.25, 0.5.
    kl = np.array([[NAN, NAN], [1, 4], [3, 0], [0, 0], [2, 0], [9, 9]], np.float32)  # epoch 5 beyond T: unused
    d = D(kl_prev=kl)
    got = compute_score("tdds", d, T=5, J=3, beta=0.5)
    s0 = 0.125 * 2 / SQ2 + 0.25 * 3 / SQ2 + 0.5 * 2 / SQ2  # = 1.414214
    s1 = 0.125 * 4 / SQ2  # = 0.353553
    np.testing.assert_allclose(got, [s0, s1], rtol=1e-6)
    np.testing.assert_allclose(got, [1.414214, 0.353553], atol=1e-6)
    # DUAL's re-implementation always uses the first pair of epochs (no slide): it would give 0.875 * 2/sqrt2
    assert not np.isclose(got[0], 0.875 * 2 / SQ2)
    # beta 0.9: the last window dominates
    np.testing.assert_allclose(compute_score("tdds", d, T=5, J=3, beta=0.9)[1], 0.9 * 0.01 * 4 / SQ2, rtol=1e-6)
    with pytest.raises(ConfigError, match="J <= T <= epochs"):
        compute_score("tdds", d, T=7, J=3)


def test_dual_and_dynunc_hand_computed():
    tp = np.array([[0.2, 0.9], [0.4, 0.9], [0.6, 0.9], [0.6, 0.9]], np.float32)
    d = D(target_prob=tp)
    # window [0.2 0.4 0.6]: std (ddof 1) 0.2, mean 0.4 -> 10 * 0.2 * 0.6 = 1.2
    # window [0.4 0.6 0.6]: std 0.115470, mean 0.533333 -> 10 * 0.115470 * 0.466667 = 0.538860
    np.testing.assert_allclose(compute_score("dual", d, T=4, J=3), [(1.2 + 0.538860) / 2, 0.0], atol=1e-5)
    np.testing.assert_allclose(compute_score("dynunc", d, J=3), [(2.0 + 1.154701) / 2, 0.0], atol=1e-5)
    np.testing.assert_allclose(mean_target_prob(d, epochs=2), [0.3, 0.9], rtol=1e-6)


def test_scores_stream_from_disk_equal_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(12, 40, 4)) * 2).astype(np.float32)
    labels = rng.integers(0, 4, 40)
    mem = Dynamics.from_logits(logits, labels, 4)
    disk = Dynamics.from_logits(logits, labels, 4, out_dir=tmp_path / "d")
    assert isinstance(disk.stat("loss"), np.memmap)
    params = {"tdds": {"T": 12, "J": 5}, "dual": {"T": 12, "J": 10}}
    for name in list_scores(needs="dynamics"):
        a = compute_score(name, mem, **params.get(name, {}))
        b = compute_score(name, disk, **params.get(name, {}))
        assert a.dtype == np.float64 and a.shape == (40,)
        np.testing.assert_allclose(a, b, err_msg=name)


def test_save_scores_index_aligned_not_sorted(tmp_path):
    scores = np.array([0.3, 0.1, 0.9, 0.5])
    p = save_scores(tmp_path / "s.npy", scores)
    back = load_scores(p, n=4)
    np.testing.assert_array_equal(back, scores)  # index-aligned: entry i is sample i
    # TDDS saves np.sort(scores) (score_win*.npy): not index-aligned, sample identities are lost
    assert not np.array_equal(np.sort(scores), back)
    assert back.argmax() == 2
    with pytest.raises(ConfigError, match="1-D"):
        save_scores(tmp_path / "bad.npy", scores.reshape(2, 2))
    assert not (tmp_path / "bad.npy").exists()
    from harness.errors import FormatError

    with pytest.raises(FormatError, match="expected \\(5,\\)"):
        load_scores(p, n=5)


def test_recorder_then_scores_end_to_end():
    # forgetting from real recorder rows: sample correct at epoch 0, wrong at 1, right at 2 -> 1 event
    rec = DynamicsRecorder(1, 2)
    import torch

    for e, z in enumerate(([2.0, 0.0], [0.0, 2.0], [2.0, 0.0])):
        rec.on_batch(e, torch.tensor([0]), torch.tensor([z]), torch.tensor([0]))
        rec.on_epoch_end(e, None)
    assert compute_score("forgetting", rec.dynamics())[0] == 1
