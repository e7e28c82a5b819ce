"""Loaders of published condensed-set formats, each fed a small file written in that exact format;
bad inputs give a FormatError naming the file and write nothing; ``import``/``inspect`` round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_subcommands

from adapters.loaders import load_published
from adapters.loaders.hfhub import rethinkdc_repo_id
from condensed import load_condensed
from harness.cli.sets import add_commands
from harness.errors import ConfigError, DatasetNotFoundError, FormatError

C10 = (3, 32, 32)


def _cli(argv: list[str]) -> str:
    return run_subcommands(add_commands, argv)


def _class_major(n_per: int, k: int = 10) -> torch.Tensor:
    return torch.arange(k).repeat_interleave(n_per)


# --- VICO -------------------------------------------------------------------------------------
def test_vico_one_or_all_experiments(tmp_path: Path):
    f = tmp_path / "res_DC_CIFAR10_ConvNet_1ipc.pt"
    exps = [[torch.randn(10, *C10), _class_major(1)] for _ in range(3)]
    torch.save({"data": exps, "accs_all_exps": {"ConvNet": [0.28, 0.29]}}, f)
    sets = load_published("vico", f)
    assert len(sets) == 3 and all(s.space == "normalized" and s.dataset == "cifar10" for s in sets)
    one = load_published("vico", f, experiment=2)
    assert len(one) == 1 and torch.equal(one[0].images, exps[2][0])
    with pytest.raises(FormatError, match="experiment 5"):
        load_published("vico", f, experiment=5)


# --- IDC --------------------------------------------------------------------------------------
def _idc_file(tmp_path: Path, tag: str = "conv3in_grad_mse_nd2000_cut_niter2000_factor2_lr0.005_mix_ipc2",
              data=None) -> Path:
    d = tmp_path / "results" / "cifar10" / tag
    d.mkdir(parents=True)
    data = data if data is not None else [torch.rand(20, *C10), _class_major(2)]
    torch.save(data, d / "data.pt")
    return d / "data.pt"


def test_idc_factor_from_tag_and_decode(tmp_path: Path):
    f = _idc_file(tmp_path)
    (cs,) = load_published("idc", f)
    assert (cs.dataset, cs.factor, cs.space, cs.ipc, cs.method) == ("cifar10", 2, "pixel", 2, "IDC")
    dec = cs.decoded()
    assert dec.images.shape == (80, *C10) and dec.class_counts() == [8] * 10
    (cs1,) = load_published("idc", f.parent, factor=1)  # option overrides the tag
    assert cs1.factor == 1


def test_idc_bad_inputs(tmp_path: Path):
    vico_like = tmp_path / "res.pt"
    torch.save({"data": []}, vico_like)
    with pytest.raises(FormatError, match="not an IDC data.pt"):
        load_published("idc", vico_like, dataset="cifar10", factor=2)
    f = _idc_file(tmp_path, tag="conv3in_factor3_ipc2")
    with pytest.raises(FormatError, match="does not divide"):
        load_published("idc", f)
    assert load_published("idc", f, allow_pad=True)[0].provenance["padded_decode"]
    g = _idc_file(tmp_path, tag="conv3in_ipc2")
    with pytest.raises(FormatError, match="factor"):
        load_published("idc", g)
    h = _idc_file(tmp_path, tag="x_factor2_ipc2_norm", data=[torch.randn(20, *C10) * 3, _class_major(2)])
    with pytest.raises(FormatError, match="unnormalised"):
        load_published("idc", h)
    t = tmp_path / "trunc" / "data.pt"
    t.parent.mkdir()
    t.write_bytes(f.read_bytes()[:100])
    with pytest.raises(FormatError, match="trunc"):
        load_published("idc", t, dataset="cifar10", factor=2)


# --- MTT --------------------------------------------------------------------------------------
def test_mtt_normalized_and_zca(tmp_path: Path):
    d = tmp_path / "cifar10" / "run0"
    d.mkdir(parents=True)
    torch.save(torch.randn(10, *C10), d / "images_best.pt")
    torch.save(_class_major(1), d / "labels_best.pt")
    torch.save(torch.tensor(0.0123), d / "lr_best.pt")
    with pytest.raises(ConfigError, match="zca=True or zca=False"):  # no images_zca_*.pt: cannot tell
        load_published("mtt", d)
    (cs,) = load_published("mtt", d, zca=False)
    assert cs.space == "normalized" and cs.provenance["learned_lr"] == pytest.approx(0.0123)
    (cz,) = load_published("mtt", d / "images_best.pt", zca=True)
    assert cz.space == "zca" and cz.zca["eps"] == 0.1 and cz.zca["fit"] == "pixel train"
    (d / "labels_best.pt").unlink()
    with pytest.raises(FormatError, match="labels_best.pt"):
        load_published("mtt", d, zca=False)


# --- KRR --------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_krr_npz_layouts_soft_labels(tmp_path: Path, layout: str):
    x = np.random.default_rng(0).standard_normal((10, *C10)).astype(np.float32)
    lab = np.eye(10, dtype=np.float32) * 0.9 - 0.1
    f = tmp_path / "kip_cifar10.npz"
    np.savez(f, images=x.transpose(0, 2, 3, 1) if layout == "NHWC" else x, labels=lab)
    (cs,) = load_published("krr", f, dataset="cifar10", method="KIP", zca=True)
    assert cs.space == "zca" and cs.label_kind == "soft" and cs.provenance["layout"] == layout
    np.testing.assert_array_equal(cs.images.numpy(), x)
    assert cs.labels.tolist() == list(range(10))


def test_krr_bad_inputs(tmp_path: Path):
    f = tmp_path / "a.npz"
    np.savez(f, images=np.zeros((10, *C10), np.float32), labels=np.zeros((10, 7), np.float32))
    with pytest.raises(FormatError, match="width 7"):
        load_published("krr", f, dataset="cifar10", method="KIP", zca=True)
    np.savez(f, images=np.zeros((10, 31, 32, 3), np.float32), labels=np.zeros((10, 10), np.float32))
    with pytest.raises(FormatError, match="neither NCHW"):
        load_published("krr", f, dataset="cifar10", method="KIP", zca=True)
    np.savez(f, x=np.zeros(3))
    with pytest.raises(FormatError, match="missing arrays"):
        load_published("krr", f, dataset="cifar10", method="KIP", zca=True)


# --- image folders and the hub cache ----------------------------------------------------------
def _write_folder(base: Path, classes: list[str], per: int = 2, size: int = 32) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (base / c).mkdir(parents=True)
        for i in range(per):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(base / c / f"{i}.png")


def test_imagefolder_sorted_and_classlist(tmp_path: Path):
    names = [f"c{i}" for i in range(10)]
    _write_folder(tmp_path / "dream", names)
    (cs,) = load_published("imagefolder", tmp_path / "dream", dataset="cifar10", method="DREAM")
    assert cs.space == "pixel" and cs.class_counts() == [2] * 10 and 0 <= cs.images.min() and cs.images.max() <= 1
    rev = names[::-1]
    (cr,) = load_published("imagefolder", tmp_path / "dream", dataset="cifar10", classes=rev)
    torch.testing.assert_close(cr.images[:2], cs.images[-2:])  # class c9 comes first
    with pytest.raises(FormatError, match="10 classes|classes"):
        load_published("imagefolder", tmp_path / "dream", dataset="cifar100")


def test_hfhub_offline_cache_and_missing(tmp_path: Path):
    repo = rethinkdc_repo_id("imagenet", "sre2l", 10)
    assert repo == "he-yang/2025-rethinkdc-imagenet-sre2l-ipc-10"
    with pytest.raises(DatasetNotFoundError, match=r"huggingface-cli download he-yang/2025-rethinkdc-imagenet-sre2l"):
        load_published("hfhub", repo, cache_dir=tmp_path / "hub")
    # a snapshot in huggingface_hub's cache layout: datasets--owner--name/{refs/main, snapshots/<sha>/...}
    root = tmp_path / "hub" / "datasets--acme--tiny-imagenette"
    sha = "0" * 40
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    from harness.data import read_classlist

    wnids = read_classlist("imagenette")
    _write_folder(root / "snapshots" / sha / "train", wnids, per=1, size=32)
    (cs,) = load_published("hfhub", "acme/tiny-imagenette", dataset="imagenette-32", cache_dir=tmp_path / "hub")
    assert cs.class_counts() == [1] * 10 and cs.provenance["repo_id"] == "acme/tiny-imagenette"


# --- import / inspect CLI ---------------------------------------------------------------------
def test_import_inspect_roundtrip(tmp_path: Path):
    f = _idc_file(tmp_path)
    out = tmp_path / "idc_set"
    text = _cli(["import", "idc", str(f), "--out", str(out)])
    assert "factor 2" in text
    cs = load_condensed(out)
    assert cs.factor == 2 and cs.method == "IDC"
    shown = _cli(["inspect", str(out)])
    for word in ("IDC", "factor      2", "pixel", "hard", "[2, 2, 2", cs.checksum(), "source_format"):
        assert word in shown


def test_import_bad_input_writes_nothing(tmp_path: Path):
    f = tmp_path / "junk.pt"
    f.write_bytes(b"not a torch file")
    out = tmp_path / "never"
    with pytest.raises(FormatError, match="junk.pt"):
        _cli(["import", "idc", str(f), "--dataset", "cifar10", "--factor", "2", "--out", str(out)])
    assert not out.exists() and list(tmp_path.iterdir()) == [f]
