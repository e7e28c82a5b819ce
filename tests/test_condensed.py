"""CondensedSet save/load/validation, the VICO loader on the published files, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapters.loaders import load_published
from condensed import CondensedSet, load_condensed
from harness.errors import FormatError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def small_set(**kw) -> CondensedSet:
    base = dict(images=torch.randn(6, 1, 28, 28), labels=torch.tensor([0, 0, 1, 1, 2, 2]), num_classes=3,
                dataset="mnist", method="test", space="normalized", mean=MNIST_MEAN, std=MNIST_STD)
    return CondensedSet(**{**base, **kw})


def test_save_load_round_trip(tmp_path: Path) -> None:
    cs = small_set(soft_labels=torch.softmax(torch.randn(6, 3), 1), provenance={"note": "x"})
    cs.save(tmp_path / "set")
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["images.safetensors", "meta.json"]
    back = load_condensed(tmp_path / "set")
    assert torch.equal(back.images, cs.images) and torch.equal(back.soft_labels, cs.soft_labels)
    meta = json.loads((tmp_path / "set" / "meta.json").read_text())
    assert meta["ipc"] == 2 and meta["class_counts"] == [2, 2, 2] and meta["label_kind"] == "soft"
    assert meta["checksum"] == cs.checksum() and back.provenance == {"note": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["set"]  # no temporary left behind


def test_overwrite_is_atomic(tmp_path: Path) -> None:
    small_set().save(tmp_path / "s")
    cs2 = small_set(images=torch.zeros(6, 1, 28, 28))
    cs2.save(tmp_path / "s")
    assert load_condensed(tmp_path / "s").checksum() == cs2.checksum()
    assert [p.name for p in tmp_path.iterdir()] == ["s"]


@pytest.mark.parametrize("kw, match", [
    ({"labels": torch.tensor([0, 0, 1, 1, 2, 3])}, "labels span"),
    ({"images": torch.full((6, 1, 28, 28), float("nan"))}, "NaN"),
    ({"images": torch.randn(6, 28, 28)}, r"\(N, C, H, W\)"),
    ({"soft_labels": torch.rand(6, 4)}, "soft labels of shape"),
    ({"space": "zca"}, "whitening"),
    ({"factor": 0}, "factor"),
])
def test_invalid_sets_are_rejected(kw: dict, match: str) -> None:
    with pytest.raises(FormatError, match=match):
        small_set(**kw)


def test_load_detects_tampering_and_missing_files(tmp_path: Path) -> None:
    small_set().save(tmp_path / "s")
    meta_p = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_p.read_text())
    meta["checksum"] = "0" * 64
    meta_p.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="checksum"):
        load_condensed(tmp_path / "s")
    (tmp_path / "s" / "images.safetensors").unlink()
    with pytest.raises(FormatError, match="images.safetensors"):
        load_condensed(tmp_path / "s")


def test_vico_mnist_published_file(data_root: Path) -> None:
    sets = load_published("vico", data_root / "condensed/vico-dc/res_DC_MNIST_ConvNet_1ipc.pt")
    assert len(sets) == 5
    cs = sets[0]
    assert cs.images.shape == (10, 1, 28, 28) and cs.labels.tolist() == list(range(10))
    assert cs.dataset == "mnist" and cs.method == "DC" and cs.space == "normalized" and cs.ipc == 1
    rec = cs.provenance["recorded_accuracies"]
    assert abs(rec["ConvNet"]["mean"] - 0.9182) < 1e-3 and rec["ConvNet"]["n"] == 100
    assert set(rec) == {"MLP", "ConvNet", "LeNet", "AlexNet", "VGG11", "ResNet18"}
    one = load_published("vico", data_root / "condensed/vico-dc/res_DC_MNIST_ConvNet_1ipc.pt", experiment=3)
    assert len(one) == 1 and torch.equal(one[0].images, sets[3].images)


def test_vico_cifar10_published_file(data_root: Path) -> None:
    (cs,) = load_published("vico", data_root / "condensed/vico-dc/res_DC_CIFAR10_ConvNet_10ipc.pt")
    assert cs.images.shape == (100, 3, 32, 32) and cs.class_counts() == [10] * 10 and cs.dataset == "cifar10"


def test_vico_bad_files(tmp_path: Path, data_root: Path) -> None:
    src = (data_root / "condensed/vico-dc/res_DC_MNIST_ConvNet_1ipc.pt").read_bytes()
    trunc = tmp_path / "res_DC_MNIST_ConvNet_1ipc.pt"
    trunc.write_bytes(src[: len(src) // 2])
    with pytest.raises(FormatError, match="truncated or corrupt"):
        load_published("vico", trunc)
    wrong = tmp_path / "res_DC_MNIST_ConvNet_2ipc.pt"
    torch.save({"something": 1}, wrong)
    with pytest.raises(FormatError, match="not a VICO result file"):
        load_published("vico", wrong)
    geo = tmp_path / "res_DC_CIFAR10_ConvNet_1ipc.pt"
    torch.save({"data": [[torch.randn(10, 1, 28, 28), torch.arange(10)]], "accs_all_exps": {}}, geo)
    with pytest.raises(FormatError, match=r"\(1, 28, 28\).*cifar10"):
        load_published("vico", geo)
    nan = tmp_path / "res_DC_MNIST_ConvNet_3ipc.pt"
    torch.save({"data": [[torch.full((10, 1, 28, 28), float("nan")), torch.arange(10)]]}, nan)
    with pytest.raises(FormatError, match="NaN"):
        load_published("vico", nan)
    with pytest.raises(FormatError, match="no such file"):
        load_published("vico", tmp_path / "missing.pt")
