"""The GoldFromOres authors' released scores: their drop rule re-implemented independently (from reading
``drop_utils/drop.py``) against ours on the real files, the official-order mapping of our datasets
(MNIST identity, cifar10-jpeg75 through the label file), ``--drop-scores authors`` end to end, and errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_subcommands

from adapters.condense.goldfromores import PrePrune, drop_samples
from harness.data import load_dataset
from harness.data.official import official_index, per_class_rank
from harness.errors import ConfigError, FormatError
from harness.pruning.goldfromores import check_released


def authors_rule(values: np.ndarray, labels: np.ndarray, num_classes: int, criterion: str, drop_ratio: float
                 ) -> set[int]:
    """Written from reading drop.py (not copied): indices_class built in dataset order, `_large` negates the
    values, each class list is sorted by value with Python's (stable) sorted, the first int(ratio * n) go."""
    indices_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i, lab in enumerate(labels.tolist()):
        indices_class[lab].append(i)
    order = criterion.split("_")[1].lower()
    v = -values if order == "large" else values
    dropped: set[int] = set()
    for group in indices_class:
        cut = int(drop_ratio * len(group))
        dropped.update(sorted(group, key=lambda i: v[i])[:cut])
    return dropped


def released(data_root: Path, stem: str) -> np.ndarray:
    f = data_root / "goldfromores" / f"{stem}.json"
    if not f.is_file():
        pytest.skip(f"{f} is absent")
    return np.array(json.loads(f.read_text()))


def dropped_by_us(data, criterion: str, ratio: float, data_root: Path) -> tuple[set[int], dict]:
    _, kept, info = drop_samples(data, PrePrune(criterion, drop_ratio=ratio, scores="authors",
                                                data_root=str(data_root)))
    return set(np.setdiff1d(np.arange(len(data)), kept.numpy()).tolist()), info


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_dataset("mnist", "train", data_root=data_root)


@pytest.mark.parametrize("criterion,ratio", [("LossConverge_large", 0.5), ("LossConverge_small", 0.9),
                                             ("MonteCarlo_small", 0.99), ("MonteCarlo_large", 0.3)])
def test_authors_rule_on_released_mnist_scores(mnist, data_root, criterion, ratio):
    values = released(data_root, f"MNIST_{criterion.split('_')[0]}")
    theirs = authors_rule(values, mnist.labels.numpy(), 10, criterion, ratio)
    ours, info = dropped_by_us(mnist, criterion, ratio, data_root)
    assert ours == theirs
    assert len(ours) == sum(int(ratio * n) for n in mnist.class_counts())
    f = data_root / "goldfromores" / f"MNIST_{criterion.split('_')[0]}.json"
    assert info["scores"] == {**info["scores"], "source": "authors", "file": f.name,
                              "md5": hashlib.md5(f.read_bytes()).hexdigest()}


def test_mnist_monte_carlo_ties_drop_the_earlier_index(mnist, data_root):
    """MNIST_MonteCarlo.json has many tied values (37,670 distinct of 60,000): the stable order decides, as in
    drop.py's sorted()."""
    values = released(data_root, "MNIST_MonteCarlo")
    assert np.unique(values).size < values.size - 20000
    theirs = authors_rule(values, mnist.labels.numpy(), 10, "MonteCarlo_small", 0.5)
    assert dropped_by_us(mnist, "MonteCarlo_small", 0.5, data_root)[0] == theirs


@pytest.fixture(scope="module")
def cifar_jpeg(data_root):
    """Our cifar10-jpeg75 train split with every image decoded as zeros except a few (for speed), and the
    archive path of the image our loader put at each position."""
    if not (data_root / "cifar10-jpeg75.tar.gz").is_file():
        pytest.skip("cifar10-jpeg75.tar.gz is absent")
    import harness.data.formats as formats

    names: list[str] = []
    real = formats.decode_image
    wanted = {f"{c}/{r:04d}.jpg" for c, r in (("airplane", 0), ("cat", 1234), ("truck", 4999), ("frog", 17))}

    def decode(data: bytes, channels: int, name: str) -> torch.Tensor:
        rel = name.split("/train/", 1)[1]
        names.append(rel)
        return real(data, channels, name) if rel in wanted else torch.zeros(3, 32, 32, dtype=torch.uint8)

    mp = pytest.MonkeyPatch()
    mp.setattr(formats, "decode_image", decode)
    mp.delenv("DDBENCH_CACHE", raising=False)
    try:
        data = load_dataset("cifar10-jpeg75", "train", data_root=data_root)
    finally:
        mp.undo()
    return data, names, wanted


def test_cifar10_jpeg_official_order_mapping(cifar_jpeg, data_root):
    import tarfile

    from harness.data.formats import decode_image

    data, names, wanted = cifar_jpeg
    official = np.load(data_root / "goldfromores" / "cifar10_train_labels_official_order.npy")
    src = official_index("cifar10-jpeg75", data.labels.numpy(), data_root)
    ours_of = np.empty_like(src)
    ours_of[src] = np.arange(src.size)  # our position of official index i
    # labels agree for every mapped index
    np.testing.assert_array_equal(data.labels.numpy()[ours_of], official)
    # and the image there is train/<class of i>/<rank of i among its class>.jpg, for every i
    rank = np.zeros(official.size, dtype=np.int64)
    seen = np.zeros(10, dtype=np.int64)
    for i, c in enumerate(official):
        rank[i], seen[c] = seen[c], seen[c] + 1
    classes = data.class_names
    assert all(names[ours_of[i]] == f"{classes[official[i]]}/{rank[i]:04d}.jpg" for i in range(official.size))
    # a few real images: the pixels our loader put at the mapped position are that file's
    with tarfile.open(data_root / "cifar10-jpeg75.tar.gz") as tf:
        for rel in sorted(wanted):
            c, r = rel.split("/")
            i = int(np.flatnonzero(official == classes.index(c))[int(r[:4])])
            raw = tf.extractfile(f"cifar10-jpeg75/train/{rel}").read()
            assert torch.equal(data.images[ours_of[i]], decode_image(raw, 3, rel)), rel
            assert int(data.images[ours_of[i]].float().std()) > 0


@pytest.mark.parametrize("criterion,ratio", [("LossInit_large", 0.99), ("LossConverge_large", 0.5),
                                             ("MonteCarlo_small", 0.9)])
def test_authors_rule_on_released_cifar10_scores_through_the_mapping(cifar_jpeg, data_root, criterion, ratio):
    data = cifar_jpeg[0]
    values = released(data_root, f"CIFAR10_{criterion.split('_')[0]}")
    official = np.load(data_root / "goldfromores" / "cifar10_train_labels_official_order.npy")
    theirs_official = authors_rule(values, official, 10, criterion, ratio)  # indices in the official order
    src = official_index("cifar10-jpeg75", data.labels.numpy(), data_root)
    ours, info = dropped_by_us(data, criterion, ratio, data_root)
    assert {int(src[j]) for j in ours} == theirs_official
    assert "rank" in info["scores"]["order"]


def test_mapping_helpers_by_hand():
    # ours class-major [0 0 1 1 1], official [1 0 1 0 1]: our k-th of class c is the official k-th of class c
    np.testing.assert_array_equal(per_class_rank(np.array([0, 0, 1, 1, 1]), np.array([1, 0, 1, 0, 1])),
                                  [1, 3, 0, 2, 4])
    with pytest.raises(FormatError, match="class sizes differ"):
        per_class_rank(np.array([0, 0, 1]), np.array([0, 1, 1]))
    np.testing.assert_array_equal(official_index("mnist", np.array([3, 1, 2])), [0, 1, 2])
    with pytest.raises(ConfigError, match="tinyimagenet.pt"):
        official_index("tinyimagenet", np.zeros(4, dtype=np.int64))
    with pytest.raises(ConfigError, match="not known to match"):
        official_index("digits", np.zeros(4, dtype=np.int64))


def test_unreleased_and_unmappable_pairs_are_refused():
    assert check_released("mnist", "LossConverge") == "MNIST_LossConverge"
    assert check_released("cifar10-jpeg75", "LossInit") == "CIFAR10_LossInit"
    assert check_released("svhn", "MonteCarlo") == "SVHN_MonteCarlo"
    with pytest.raises(ConfigError, match="never released LossInit scores for MNIST"):
        check_released("mnist", "LossInit")
    with pytest.raises(ConfigError, match="never released LossConverge scores for FashionMNIST"):
        check_released("fashionmnist", "LossConverge")
    with pytest.raises(ConfigError, match="released no scores for dataset 'mnist5k'"):
        check_released("mnist5k", "LossConverge")
    with pytest.raises(ConfigError, match="construction was never published"):
        check_released("tinyimagenet", "LossConverge")


def test_drop_scores_authors_end_to_end(data_root, tmp_path):
    """`ddbench condense --drop-scores authors` on the full MNIST (the released scores cover all 60,000):
    DM, ipc 1, one iteration of a tiny ConvNet; the provenance names the file and its md5."""
    from condensed import CondensedSet
    from harness.cli.condense import add_commands

    out = tmp_path / "set"
    text = run_subcommands(add_commands, [
        "condense", "--method", "dm", "--dataset", "mnist", "--ipc", "1", "--iterations", "1", "--out", str(out),
        "--param", 'model_kwargs={"width": 8, "depth": 2}', "--param", "batch_real=8",
        "--drop-criterion", "LossConverge_large", "--drop-ratio", "0.5", "--drop-scores", "authors",
        "--data-root", str(data_root)])
    assert "wrote" in text
    cs = CondensedSet.load(out)
    res = cs.provenance["pre_prune_result"]
    f = data_root / "goldfromores" / "MNIST_LossConverge.json"
    assert res["scores"]["file"] == "MNIST_LossConverge.json"
    assert res["scores"]["md5"] == hashlib.md5(f.read_bytes()).hexdigest()
    assert res["n_before"] == 60000 and res["n_after"] == 60000 - sum(int(0.5 * n) for n in
                                                                       [5923, 6742, 5958, 6131, 5842, 5421, 5918,
                                                                        6265, 5851, 5949])
    assert cs.provenance["pre_prune"]["scores"] == "authors" and cs.provenance["pre_prune"]["params"] == {}
    assert "data_root" not in cs.provenance["pre_prune"]


@pytest.mark.parametrize("argv,match", [
    (["--dataset", "mnist", "--drop-criterion", "LossInit_large", "--drop-scores", "authors"],
     "never released LossInit scores for MNIST"),
    (["--dataset", "tinyimagenet", "--drop-criterion", "LossConverge_large", "--drop-scores", "authors"],
     "tinyimagenet.pt"),
    (["--dataset", "digits", "--drop-criterion", "LossConverge_large", "--drop-scores", "authors"],
     "released no scores for dataset 'digits'"),
    (["--dataset", "digits", "--drop-criterion", "Random", "--drop-scores", "authors"], "Random criterion"),
    (["--dataset", "digits", "--drop-criterion", "LossInit_large", "--drop-scores", "/nonexistent/s.npy"],
     "no such file"),
    (["--dataset", "digits", "--drop-scores", "authors"], "need --drop-criterion"),
])
def test_drop_scores_cli_errors(tmp_path, argv, match):
    import argparse

    from harness.cli.condense import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    base = ["condense", "--method", "dm", "--ipc", "1", "--out", str(tmp_path / "o"), "--data-root", str(tmp_path)]
    if "--drop-criterion" in argv:
        argv = [*argv, "--drop-ratio", "0.5"]
    args = parser.parse_args(base + argv)
    with pytest.raises(ConfigError, match=match):
        args.func(args)
    assert not (tmp_path / "o").exists()


def test_authors_scores_of_wrong_length_are_refused(tmp_path):
    """A released file that does not cover our split (e.g. a truncated copy) fails with the counts."""
    (tmp_path / "goldfromores").mkdir()
    (tmp_path / "goldfromores" / "MNIST_LossConverge.json").write_text(json.dumps([0.1] * 7))
    d = load_dataset("digits")
    from harness.data.images import LabeledImages

    fake = LabeledImages(images=d.images[:10], labels=d.labels[:10], num_classes=10, mean=d.mean, std=d.std,
                         name="mnist:train")
    with pytest.raises(FormatError, match="7 scores, expected 10"):
        drop_samples(fake, PrePrune("LossConverge_large", drop_ratio=0.5, scores="authors", data_root=str(tmp_path)))
    (tmp_path / "goldfromores" / "MNIST_LossConverge.json").write_text("[0.1, NaN" + ", 0.2" * 8 + "]")
    with pytest.raises(FormatError, match="NaN or infinite"):
        drop_samples(fake, PrePrune("LossConverge_large", drop_ratio=0.5, scores="authors", data_root=str(tmp_path)))
