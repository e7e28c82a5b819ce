"""The coreset flow on the embedded digits set (tiny epochs) and the pruning CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.cli import main
from harness.dynamics import Dynamics
from harness.pruning.coreset import run_coreset
from harness.pruning.select import Budget


def test_run_coreset_digits_and_cache(tmp_path):
    kw = dict(protocol_dynamics="ccs", protocol_train="ccs", seed=0, workdir=tmp_path, model="dc_mlp",
              epochs_dynamics=3, epochs_train=4, runs=1)
    rep = run_coreset("digits", "el2n_easy", Budget.keep_fraction(0.5), **kw)
    assert rep["n_train"] == 1438 and rep["n_kept"] == 719 and sum(rep["class_counts"]) == 719
    assert rep["mean"] > 0.25  # chance is 0.1; 12 SGD steps of an MLP on the easy half
    scores = np.load(f"{rep['out_dir']}/scores.npy")
    kept = np.load(f"{rep['out_dir']}/kept.npy")
    assert scores.shape == (1438,) and kept.dtype == np.int64 and np.all(np.diff(kept) > 0)
    assert set(kept) == set(np.argsort(scores, kind="stable")[:719])  # easy = lowest EL2N, index-aligned
    meta = json.loads((tmp_path / "dynamics" / rep["dynamics_dir"].split("/")[-1] / "meta.json").read_text())
    assert meta["finished"] and meta["epochs_done"] == 3
    assert rep["seeds"] == [0] and rep["engine"] == {"path": "auto", "precision": "auto", "compile": "auto"}
    assert rep["ran"]["path"] == "sequential" and rep["ran"]["precision"] in ("fp32", "bf16")
    assert rep["ran"]["compile"] is False and rep["dynamics_epochs_read"] == 3  # EL2N reads 10; the run has 3
    # a second recipe reuses the cached dynamics (no new dynamics directory); explicit subset-training seeds
    rep2 = run_coreset("digits", "ccs_balance", Budget.ipc(20), **{**kw, "runs": None}, seeds=[4, 2])
    assert rep2["dynamics_dir"] == rep["dynamics_dir"]
    assert len(list((tmp_path / "dynamics").iterdir())) == 1
    assert rep2["class_counts"] == [20] * 10
    assert rep2["seeds"] == [4, 2] and len(rep2["accuracies"]) == 2  # aligned with the seeds
    # random reads no training dynamics: none are trained
    rep3 = run_coreset("digits", "random_balance", Budget.ipc(20), **{**kw, "workdir": tmp_path / "r"})
    assert rep3["dynamics_dir"] is None and rep3["dynamics_epochs_read"] == 0
    assert not (tmp_path / "r" / "dynamics").exists() and rep3["class_counts"] == [20] * 10


def test_run_coreset_tdds_protocol_weights_the_loss_by_normalised_scores(tmp_path):
    """tdds-subset: the kept samples' weights are their TDDS scores min-max normalised over the whole set."""
    from harness.errors import ConfigError

    kw = dict(protocol_dynamics="tdds", protocol_train="tdds-subset", seed=0, workdir=tmp_path, model="dc_mlp",
              epochs_dynamics=3, epochs_train=1, runs=1, score_params={"T": 3, "J": 3})
    rep = run_coreset("digits", "tdds", Budget.prune_rate(0.5), **kw)
    scores = np.load(f"{rep['out_dir']}/scores.npy")
    kept = np.load(f"{rep['out_dir']}/kept.npy")
    w = np.load(f"{rep['out_dir']}/weights.npy")
    expect = (scores[kept] - scores.min()) / (scores.max() - scores.min())  # over all 1438, not the kept half
    np.testing.assert_allclose(w, expect, rtol=1e-12)
    assert w.min() > 0.0 and w.max() == 1.0  # TDDS keeps the high end; the top sample has weight 1
    assert "loss weighting tdds_score_mean" in rep["protocol_train"]
    assert rep["train_steps"] == 1 * int(np.ceil(kept.size / 128))
    with pytest.raises(ConfigError, match="has none"):  # random has no scores to weight by
        run_coreset("digits", "random", Budget.prune_rate(0.5), **kw)


def test_cli_score_select_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n, c, e = 60, 3, 12
    logits = rng.normal(size=(e, n, c)).astype(np.float32)
    labels = rng.integers(0, c, n)
    np.save(tmp_path / "labels.npy", labels)
    dumps = tmp_path / "npy"
    dumps.mkdir()
    for ep in range(e):
        order = rng.permutation(n)
        np.save(dumps / f"{ep}_Output.npy", logits[ep, order])
        np.save(dumps / f"{ep}_Index.npy", order)
    Dynamics.from_logits(logits, labels, c, out_dir=tmp_path / "dyn")
    assert main(["score", "--dynamics", str(tmp_path / "dyn"), "--method", "tdds", "--param", "T=12",
                 "--param", "J=5", "--out", str(tmp_path / "tdds.npy")]) == 0
    assert main(["score", "--from-logits", str(dumps), "--labels", str(tmp_path / "labels.npy"), "--method",
                 "tdds", "--param", "T=12", "--param", "J=5", "--out", str(tmp_path / "tdds2.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "tdds.npy"), np.load(tmp_path / "tdds2.npy"), rtol=1e-6)
    assert main(["select", "--scores", str(tmp_path / "tdds.npy"), "--labels", str(tmp_path / "labels.npy"),
                 "--recipe", "tdds", "--keep", "0.25", "--out", str(tmp_path / "kept.npy")]) == 0
    kept = np.load(tmp_path / "kept.npy")
    assert kept.size == 15 and set(kept) == set(np.argsort(-np.load(tmp_path / "tdds.npy"))[:15])
    assert main(["select", "--dynamics", str(tmp_path / "dyn"), "--recipe", "random_balance", "--ipc", "3",
                 "--out", str(tmp_path / "rb.npy")]) == 0
    assert np.bincount(labels[np.load(tmp_path / "rb.npy")]).tolist() == [3, 3, 3]
    assert main(["recipes"]) == 0
    capsys.readouterr()
    # bad input: clear error, exit 2, nothing written
    bad = [
        ["score", "--dynamics", str(tmp_path / "dyn"), "--method", "tdd", "--out", str(tmp_path / "x1.npy")],
        ["score", "--dynamics", str(tmp_path), "--method", "el2n", "--out", str(tmp_path / "x2.npy")],
        ["score", "--dynamics", str(tmp_path / "dyn"), "--method", "tdds", "--param", "window=3",
         "--out", str(tmp_path / "x3.npy")],
        ["select", "--scores", str(tmp_path / "tdds.npy"), "--labels", str(tmp_path / "labels.npy"),
         "--recipe", "tdds", "--keep", "1.5", "--out", str(tmp_path / "x4.npy")],
        ["select", "--scores", str(tmp_path / "kept.npy"), "--labels", str(tmp_path / "labels.npy"),
         "--recipe", "el2n", "--keep", "0.5", "--out", str(tmp_path / "x5.npy")],
        ["select", "--scores", str(tmp_path / "tdds.npy"), "--labels", str(tmp_path / "labels.npy"),
         "--recipe", "ccs_hardd", "--keep", "0.5", "--out", str(tmp_path / "x6.npy")],
    ]
    for i, argv in enumerate(bad, 1):
        assert main(argv) == 2, argv
        assert not (tmp_path / f"x{i}.npy").exists()
    err = capsys.readouterr().err
    assert "did you mean tdds" in err and "no meta.json" in err and "expected (60,)" in err


@pytest.mark.parametrize("argv", [["dynamics", "--help"], ["coreset", "--help"]])
def test_cli_help(argv, capsys):
    assert main(argv) == 0  # main returns the exit status (--help included) instead of raising SystemExit
    assert f"usage: ddbench {argv[0]}" in capsys.readouterr().out
