"""Dataset loaders on the real files in ../shared/data and on small files in the same formats."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import LabeledImages, get_spec, list_datasets, load_dataset, read_classlist
from harness.errors import ConfigError, DatasetNotFoundError, FormatError


# --- real files -------------------------------------------------------------------------------------
def test_mnist_real_files(data_root: Path) -> None:
    train = load_dataset("mnist", "train", data_root=data_root)
    test = load_dataset("mnist", "test", data_root=data_root)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts()[:3] == [5923, 6742, 5958]  # the official MNIST class counts
    assert abs(float(train.pixel_float().mean()) - 0.1307) < 1e-3


def test_fashionmnist_real_files(data_root: Path) -> None:
    test = load_dataset("fashionmnist", "test", data_root=data_root)
    assert test.images.shape == (10000, 1, 28, 28) and test.class_counts() == [1000] * 10


def test_cifar10_jpeg_from_tarball_and_cache(data_root: Path, data_cache: Path) -> None:
    test = load_dataset("cifar10-jpeg75", "test", data_root=data_root, cache_dir=data_cache)
    assert test.images.shape == (10000, 3, 32, 32) and test.class_counts() == [1000] * 10
    assert test.class_names[0] == "airplane" and test.class_names[-1] == "truck"
    # channel means as the data README measured them (train split: 0.4913/0.4821/0.4465)
    assert torch.allclose(test.pixel_float().mean((0, 2, 3)), torch.tensor([0.494, 0.485, 0.450]), atol=5e-3)
    assert any(data_cache.iterdir())
    again = load_dataset("cifar10-jpeg75", "test", data_root=data_root, cache_dir=data_cache)
    assert torch.equal(again.images, test.images)


def test_tinyimagenet_official_layout_from_tarball(data_root: Path, data_cache: Path) -> None:
    val = load_dataset("tinyimagenet", "val", data_root=data_root, cache_dir=data_cache)
    assert val.images.shape == (10000, 3, 64, 64) and val.class_counts() == [50] * 200
    assert val.class_names == tuple(sorted(val.class_names))


def test_embedded_sets_need_no_files() -> None:
    m = load_dataset("mnist5k", "train")
    assert len(m) == 4000 and m.class_counts() == [400] * 10
    assert len(load_dataset("mnist5k", "test")) == 1000
    d = load_dataset("digits", "train")
    assert d.size == (8, 8) and int(d.images.max()) == 255


# --- small files in the same on-disk formats ---------------------------------------------------------
def _write_cifar100(root: Path, n: int = 6) -> np.ndarray:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    for split in ("train", "test"):
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": [0, 1, 2, 99, 5, 7][:n], "coarse_labels": [0] * n}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    return data


def test_cifar100_small_file(tmp_path: Path) -> None:
    data = _write_cifar100(tmp_path)
    ds = load_dataset("cifar100", "train", data_root=tmp_path)
    assert ds.images.shape == (6, 3, 32, 32) and ds.labels.tolist() == [0, 1, 2, 99, 5, 7]
    assert torch.equal(ds.images[1].flatten(), torch.from_numpy(data[1]))  # row = R plane, G plane, B plane
    assert ds.num_classes == 100 and ds.mean[0] == 0.5071


def test_cifar10_small_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": np.full((2, 3072), 7, np.uint8), "labels": [3, 4]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    assert len(load_dataset("cifar10", "train", data_root=tmp_path)) == 10


def test_svhn_small_file(tmp_path: Path) -> None:
    import scipy.io as sio

    x = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)
    sio.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [2], [9]])})
    ds = load_dataset("svhn", "train", data_root=tmp_path)
    assert ds.labels.tolist() == [0, 1, 2, 9]  # SVHN stores digit 0 as 10
    assert torch.equal(ds.images[2].permute(1, 2, 0), torch.from_numpy(x[..., 2]))


def _jpeg(color: tuple[int, int, int], size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def test_imagenet_subset_folder_resized(tmp_path: Path) -> None:
    wnids = read_classlist("imagenette")
    for split in ("train", "val"):
        for i, w in enumerate(wnids + ["n99999999"]):  # an extra class not in the list is ignored
            d = tmp_path / "imagenet" / split / w
            d.mkdir(parents=True)
            (d / "a.JPEG").write_bytes(_jpeg((10 * i, 0, 0)))
    ds = load_dataset("imagenette-32", "train", data_root=tmp_path)
    assert ds.images.shape == (10, 3, 32, 32) and ds.labels.tolist() == list(range(10))
    assert int(ds.images[3, 0, 5, 5]) == 30


def test_image_folder_archive(tmp_path: Path) -> None:
    arch = tmp_path / "cifar10-jpeg75.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        for cls, color in (("b", (0, 255, 0)), ("a", (255, 0, 0))):
            data = _jpeg(color, 32)
            info = tarfile.TarInfo(f"cifar10-jpeg75/test/{cls}/0000.png")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    ds = load_dataset("cifar10-jpeg75", "test", data_root=tmp_path)
    assert ds.labels.tolist() == [0, 1] and int(ds.images[0, 0, 0, 0]) == 255  # sorted: 'a' first


# --- bad input ------------------------------------------------------------------------------------------
def test_missing_dataset_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"cifar-100-python.*Expected layout"):
        load_dataset("cifar100", "train", data_root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="MNIST"):
        load_dataset("mnist", "train", data_root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200"):
        load_dataset("tinyimagenet", "train", data_root=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing downloaded, nothing written


def test_corrupt_cifar_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"\x80\x04garbage")
    with pytest.raises(FormatError, match="cifar-100-python/train"):
        load_dataset("cifar100", "train", data_root=tmp_path)


def test_unknown_dataset_and_split() -> None:
    with pytest.raises(KeyError, match="cifar10"):
        get_spec("cifar-10")
    with pytest.raises(ConfigError, match="no split"):
        load_dataset("mnist5k", "val")


def test_no_data_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DDBENCH_DATA", raising=False)
    with pytest.raises(ConfigError, match="DDBENCH_DATA"):
        load_dataset("mnist", "train")


def test_registry_lists_the_issue_datasets() -> None:
    names = set(list_datasets())
    assert {"mnist", "fashionmnist", "svhn", "cifar10", "cifar100", "tinyimagenet", "imagenet",
            "cifar10-jpeg75", "mnist5k", "digits"} <= names


def test_labeled_images_spaces_round_trip() -> None:
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    li = LabeledImages(x, torch.tensor([0, 1, 2, 1]), 3, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    n = li.as_space("normalized")
    assert torch.allclose(n.pixel_float(), x.float() / 255, atol=1e-6)
    with pytest.raises(FormatError, match="labels"):
        LabeledImages(x, torch.tensor([0, 1]), 3)
