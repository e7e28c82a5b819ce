"""MTT run folders and KRR ``.npz`` sets read for what they are.

MTT: a run folder is re-enacted the way ``distill.py --zca`` writes it (kornia's ZCAWhitening, eps 0.1,
fitted on ``ToTensor()`` pixels of the training split, synthetic images saved in that ZCA space and
``images_zca_<it>.pt`` as their inverse), on the embedded 8x8 digits standing in for CIFAR. Our import
must detect ZCA and our refit on the real training pixels must be MTT's transform.
KRR: label rows classified as one-hot / centred one-hot / learned, ``method`` required, and KIP's own
whitening (kip/nn_training.ipynb ``zca_normalize``) checked against a NumPy re-implementation.
"""

from __future__ import annotations

from pathlib import Path

import kornia
import numpy as np
import pytest
import torch
from conftest import run_subcommands

from adapters.loaders import load_published
from adapters.loaders.krr import classify_labels
from condensed import load_condensed, prepare_for_eval
from harness.augment import ZCA
from harness.cli.sets import add_commands
from harness.data import load_dataset
from harness.engine.protocol import create_protocol
from harness.errors import ConfigError, FormatError
from harness.evaluate import evaluate, loss_for, model_inputs

K = 10
C10 = (3, 32, 32)


@pytest.fixture(scope="module")
def digits() -> tuple:
    return load_dataset("digits", "train"), load_dataset("digits", "test")


# --- MTT ---------------------------------------------------------------------------------------------
def _mtt_zca_run(base: Path, train_pixels: torch.Tensor, ipc: int = 2) -> tuple[Path, object, dict]:
    """A run folder as distill.py writes it with --zca: iterations 0 and 100 (the best)."""
    mtt_zca = kornia.enhance.ZCAWhitening(eps=0.1, compute_inv=True)
    mtt_zca.fit(train_pixels)  # utils.py get_dataset: ToTensor() only, then zca.fit(images)
    d = base / "logged_files" / "digits" / "run-0"
    d.mkdir(parents=True)
    labels = torch.arange(K).repeat_interleave(ipc)
    g = torch.Generator().manual_seed(0)
    syn = {it: torch.randn(K * ipc, *train_pixels.shape[1:], generator=g) * 0.3 for it in (0, 100)}
    for it, x in syn.items():
        torch.save(x, d / f"images_{it}.pt")
        torch.save(labels, d / f"labels_{it}.pt")
        torch.save(mtt_zca.inverse_transform(x), d / f"images_zca_{it}.pt")
    torch.save(syn[100], d / "images_best.pt")
    torch.save(labels, d / "labels_best.pt")
    return d, mtt_zca, syn


def test_mtt_zca_detected_and_refit_is_mtts_transform(tmp_path: Path, digits):
    train, test = digits
    d, mtt_zca, syn = _mtt_zca_run(tmp_path, train.pixel_float())
    (cs,) = load_published("mtt", d, dataset="digits")
    assert cs.space == "zca" and cs.zca["fit"] == "pixel train" and cs.zca["eps"] == 0.1
    assert "detected" in cs.provenance["zca"]
    li, z = prepare_for_eval(cs)
    assert z is not None and z.fit_space == "pixel"
    # the inverse of our refit maps images_best.pt onto MTT's own pixel copy of that iteration
    torch.testing.assert_close(z.inverse(li.images), torch.load(d / "images_zca_100.pt"), rtol=1e-4, atol=1e-5)
    # the evaluator whitens the test split exactly as MTT's get_dataset does (zca(ToTensor() test pixels))
    _, x_test = model_inputs(li, test, z)
    torch.testing.assert_close(x_test, mtt_zca(test.pixel_float()), rtol=1e-4, atol=1e-4)
    # what the old record ("normalized train", test normalized) gives is not MTT's transform
    old = ZCA(0.1).fit(train.normalized())
    assert (old(test.normalized()) - mtt_zca(test.pixel_float())).abs().max() > 0.05
    res = evaluate(li, test, create_protocol("vico-dc", "digits", epochs=2), runs=1, zca=z)
    assert res.n_train == 2 * K and 0.0 <= res.mean <= 1.0


def test_mtt_zca_contradiction_and_ambiguity(tmp_path: Path, digits):
    train, _ = digits
    d, _, _ = _mtt_zca_run(tmp_path, train.pixel_float())
    with pytest.raises(FormatError, match="only with --zca"):
        load_published("mtt", d, dataset="digits", zca=False)
    for p in d.glob("images_zca_*.pt"):
        p.unlink()
    with pytest.raises(ConfigError, match="cannot tell whether this MTT run used --zca"):
        load_published("mtt", d, dataset="digits")
    (cz,) = load_published("mtt", d, dataset="digits", zca=True)  # an ipc >= 50 run writes no copies
    assert cz.space == "zca" and cz.provenance["zca"] == "as given (zca=True)"
    (cn,) = load_published("mtt", d, dataset="digits", zca=False)
    assert cn.space == "normalized" and cn.zca is None


def test_mtt_pixel_copy(tmp_path: Path, digits):
    train, _ = digits
    d, _, syn = _mtt_zca_run(tmp_path, train.pixel_float())
    (px,) = load_published("mtt", d, dataset="digits", pixel_copy=True)
    assert px.space == "pixel" and px.zca is None and px.provenance["iteration"] == 100
    assert torch.equal(px.images, torch.load(d / "images_zca_100.pt"))
    (p0,) = load_published("mtt", d, dataset="digits", pixel_copy=True, suffix="0")
    assert p0.provenance["iteration"] == 0 and torch.equal(p0.images, torch.load(d / "images_zca_0.pt"))
    (d / "images_100.pt").unlink()  # best no longer identifiable
    with pytest.raises(FormatError, match="equals images_best.pt"):
        load_published("mtt", d, dataset="digits", pixel_copy=True)


def test_mtt_normalize_constants_are_mtts(tmp_path: Path):
    d = tmp_path / "CIFAR100" / "run"
    d.mkdir(parents=True)
    torch.save(torch.randn(100, *C10), d / "images_best.pt")
    torch.save(torch.arange(100), d / "labels_best.pt")
    (cs,) = load_published("mtt", d, zca=False)
    # utils.py get_dataset: CIFAR100 normalizes with CIFAR-10's constants, not CIFAR-100's own
    assert cs.dataset == "cifar100" and cs.mean == (0.4914, 0.4822, 0.4465) and cs.std == (0.2023, 0.1994, 0.2010)


# --- KRR: labels and method ---------------------------------------------------------------------------
def test_classify_labels_hand_cases():
    y = np.array([0, 2, 1, 2])
    onehot = np.eye(3)[y]
    assert classify_labels(onehot) == "hard"
    assert classify_labels((onehot - 1 / 3).astype(np.float32)) == "centred"
    assert classify_labels(onehot - 0.1) == "learned"  # 1/10 is the centring for K = 10, not for K = 3
    nudged = onehot - 1 / 3
    nudged[1, 0] += 1e-3
    assert classify_labels(nudged) == "learned"
    assert classify_labels(np.eye(10) - 0.1) == "centred"  # rows 0.9 / -0.1
    assert classify_labels(np.eye(10) * 0.9 - 0.1) == "learned"  # rows 0.8 / -0.1: not a fixed target


def _npz(tmp_path: Path, name: str, labels: np.ndarray, n: int = 10, nhwc: bool = True) -> tuple[Path, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((n, *C10)).astype(np.float32)
    f = tmp_path / "cifar10" / name
    f.parent.mkdir(parents=True, exist_ok=True)
    np.savez(f, images=x.transpose(0, 2, 3, 1) if nhwc else x, labels=labels)
    return f, x


def test_krr_centred_onehot_are_hard_labels(tmp_path: Path):
    y = np.arange(10)
    f, x = _npz(tmp_path, "ConvNet_ssize10_zca_nol_noaug_ckpt1000.npz", (np.eye(10)[y] - 0.1).astype(np.float32))
    (cs,) = load_published("krr", f, method="KIP")
    assert cs.method == "KIP" and cs.space == "zca" and cs.zca["impl"] == "kip"
    assert cs.label_kind == "hard" and cs.labels.tolist() == y.tolist()
    assert "not learned" in cs.provenance["label_semantics"] and cs.provenance["regression_targets"] == "onehot - 1/10"
    np.testing.assert_array_equal(cs.images.numpy(), x)
    proto = create_protocol("vico-dc", "cifar10")
    assert loss_for(cs.to_labeled(), proto).loss == "ce"


def test_krr_learned_labels_train_with_mse(tmp_path: Path):
    lab = (np.eye(10) * 0.7 - 0.05 + np.random.default_rng(1).normal(0, 0.05, (10, 10))).astype(np.float32)
    f, _ = _npz(tmp_path, "ConvNet_ssize10_zca_l_noaug_ckpt1000.npz", lab)
    (cs,) = load_published("krr", f, method="FRePo")
    assert cs.method == "FRePo" and cs.label_kind == "soft" and cs.provenance["soft_label_loss"] == "mse"
    assert "learned label vectors" in cs.provenance["label_semantics"]
    torch.testing.assert_close(cs.soft_labels, torch.from_numpy(lab))
    cs.save(tmp_path / "set")
    li = load_condensed(tmp_path / "set").to_labeled()
    assert loss_for(li, create_protocol("vico-dc", "cifar10")).loss == "mse"
    with pytest.raises(ConfigError, match="regression targets"):
        loss_for(li, create_protocol("vico-dc", "cifar10", loss="soft_ce"))
    with pytest.raises(FormatError, match="'nol'"):  # the name says no label learning
        load_published("krr", _npz(tmp_path, "ConvNet_ssize10_zca_nol_aug_ckpt5.npz", lab)[0], method="KIP")


def test_krr_plain_onehot_and_indices_nozca(tmp_path: Path):
    y = np.arange(10)[::-1].copy()
    f, _ = _npz(tmp_path, "ConvNet_ssize10_nozca_nol_noaug_ckpt0.npz", np.eye(10, dtype=np.float32)[y], nhwc=False)
    (cs,) = load_published("krr", f, method="KIP")
    assert cs.label_kind == "hard" and cs.labels.tolist() == y.tolist() and cs.provenance["layout"] == "NCHW"
    assert cs.space == "normalized" and cs.zca is None and cs.std == (0.2470, 0.2435, 0.2616)
    g, _ = _npz(tmp_path, "x_nozca.npz", y)
    (ci,) = load_published("krr", g, method="KIP")
    assert ci.labels.tolist() == y.tolist() and ci.label_kind == "hard"


def test_krr_method_and_zca_required(tmp_path: Path):
    f, _ = _npz(tmp_path, "distilled.npz", np.eye(10, dtype=np.float32))
    with pytest.raises(ConfigError, match="pass method="):
        load_published("krr", f, zca=True)
    with pytest.raises(ConfigError, match="neither 'zca' nor 'nozca'"):
        load_published("krr", f, method="KIP")
    out = tmp_path / "imported"
    with pytest.raises(ConfigError, match="pass method="):
        run_subcommands(add_commands, ["import", "krr", str(f), "--zca", "--out", str(out)])
    assert not out.exists()
    run_subcommands(add_commands, ["import", "krr", str(f), "--zca", "--method", "RFAD", "--out", str(out)])
    assert load_condensed(out).method == "RFAD"


# --- KIP's whitening ----------------------------------------------------------------------------------
def _kip_reference(train_nhwc: np.ndarray, x_nhwc: np.ndarray, reg: float) -> np.ndarray:
    """kip/nn_training.ipynb, re-implemented in NumPy: standardize with the training split's statistics,
    layer norm per image, uncentred covariance, reg * trace / d, SVD, rank control, x @ W (NHWC layout)."""
    mean, std = train_nhwc.mean(axis=(0, 1, 2)), train_nhwc.std(axis=(0, 1, 2))

    def layer_norm(a: np.ndarray) -> np.ndarray:
        a = ((a - mean) / std).reshape(a.shape[0], -1).astype(np.float64)
        a = a - a.mean(axis=1)[:, None]
        return a / np.linalg.norm(a, axis=1)[:, None]

    xt = layer_norm(train_nhwc)
    n, d = xt.shape
    cov = xt.T @ xt / n
    u, s, _ = np.linalg.svd(cov + reg * np.trace(cov) / d * np.eye(d))
    inv = s ** -0.5
    if n < d:
        inv[n:] = 1.0
    w = u @ np.diag(inv) @ u.T
    return (layer_norm(x_nhwc) @ w).reshape(x_nhwc.shape)


@pytest.mark.parametrize("n_train", [None, 20])  # None: the whole digits split (n > d); 20: n < d, rank control
def test_kip_zca_matches_reference(digits, n_train):
    train, test = digits
    px = train.pixel_float()[:n_train]
    tx = test.pixel_float()[:50]
    to_nhwc = lambda t: t.permute(0, 2, 3, 1).double().numpy()  # noqa: E731
    ref = _kip_reference(to_nhwc(px), to_nhwc(tx), 0.1)
    z = ZCA.from_record({"impl": "kip", "eps": 0.1, "fit": "pixel train"}).fit(px)
    np.testing.assert_allclose(z(tx).permute(0, 2, 3, 1).numpy(), ref, rtol=1e-3, atol=1e-4)
    # standardization first: fitting on normalized pixels gives the same whitening
    z2 = ZCA(0.1, fit_space="normalized", kind="kip").fit(train.normalized()[:n_train])
    torch.testing.assert_close(z2(test.normalized()[:50]), z(tx), rtol=1e-3, atol=1e-4)
    with pytest.raises(ConfigError, match="not invertible"):
        z.inverse(z(tx))


def test_krr_kip_zca_set_refits_kip_whitening(tmp_path: Path, digits):
    train, test = digits
    picks = torch.cat([torch.nonzero(train.labels == c).flatten()[:2] for c in range(K)])
    to_nhwc = lambda t: t.permute(0, 2, 3, 1).double().numpy()  # noqa: E731
    whitened = _kip_reference(to_nhwc(train.pixel_float()), to_nhwc(train.subset(picks).pixel_float()), 0.1)
    lab = np.eye(K, dtype=np.float32)[train.labels[picks].numpy()] - 0.1
    f = tmp_path / "ConvNet_ssize10_zca_nol_noaug_ckpt0.npz"
    np.savez(f, images=whitened.astype(np.float32), labels=lab)
    (cs,) = load_published("krr", f, method="KIP", dataset="digits")
    li, z = prepare_for_eval(cs)
    assert z.kind == "kip" and li.soft_labels is None
    torch.testing.assert_close(z(train.subset(picks).pixel_float()), li.images, rtol=1e-3, atol=1e-4)
    _, x_test = model_inputs(li, test, z)
    np.testing.assert_allclose(x_test.permute(0, 2, 3, 1).numpy(),
                               _kip_reference(to_nhwc(train.pixel_float()), to_nhwc(test.pixel_float()), 0.1),
                               rtol=1e-3, atol=1e-4)
