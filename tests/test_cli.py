"""The ``ddbench`` command: evaluate writes a JSON result; bad input exits 2 with one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from condensed import CondensedSet
from harness.cli import main


def test_evaluate_condensed_dir_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.data import load_dataset
    from harness.evaluate import random_per_class

    train = load_dataset("digits", "train")
    idx = random_per_class(train.labels, 3, seed=0)
    sub = train.subset(idx)
    CondensedSet(images=sub.normalized(), labels=sub.labels, num_classes=10, dataset="digits", method="random",
                 space="normalized", mean=sub.mean, std=sub.std).save(tmp_path / "set")
    out = tmp_path / "res.json"
    rc = main(["evaluate", "--set", str(tmp_path / "set"), "--protocol", "vico-dc", "--model", "convnet_d2",
               "--runs", "2", "--epochs", "3", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert len(res["accuracies"]) == 2 and res["protocol"]["epochs"] == 3 and "torch" in res["versions"]
    assert "protocol: vico-dc" in capsys.readouterr().out


def test_evaluate_random_subset(tmp_path: Path) -> None:
    rc = main(["evaluate", "--dataset", "digits", "--ipc", "2", "--model", "convnet_d2", "--runs", "1",
               "--epochs", "2", "--out", str(tmp_path / "r.json")])
    assert rc == 0 and (tmp_path / "r.json").is_file()


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.pt", "no such file"),
    (lambda d: (d / "res_DC_MNIST_ConvNet_1ipc.pt").write_bytes(b"PK\x03\x04broken") and
     d / "res_DC_MNIST_ConvNet_1ipc.pt", "truncated or corrupt"),
    (lambda d: torch.save({"data": [[torch.randn(10, 1, 28, 28), torch.arange(10) + 5]]},
                          d / "res_DC_MNIST_ConvNet_1ipc.pt") or d / "res_DC_MNIST_ConvNet_1ipc.pt", "labels span"),
    (lambda d: torch.save({"data": [[torch.full((10, 1, 28, 28), float("nan")), torch.arange(10)]]},
                          d / "res_DC_MNIST_ConvNet_1ipc.pt") or d / "res_DC_MNIST_ConvNet_1ipc.pt", "NaN"),
    (lambda d: torch.save({"data": [[torch.randn(10, 3, 32, 32), torch.arange(10)]]},
                          d / "res_DC_MNIST_ConvNet_1ipc.pt") or d / "res_DC_MNIST_ConvNet_1ipc.pt", "mnist is"),
])
def test_bad_input_one_clear_error_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture, make, match) -> None:
    path = make(tmp_path)
    out = tmp_path / "out.json"
    rc = main(["evaluate", "--set", str(path), "--runs", "1", "--out", str(out), "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and str(path.name) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_listings(capsys: pytest.CaptureFixture) -> None:
    assert main(["datasets"]) == 0 and "mnist5k" in capsys.readouterr().out
    assert main(["models"]) == 0 and "convnet" in capsys.readouterr().out
    assert main(["protocols", "--dataset", "mnist"]) == 0 and "crop_scale_rotate" in capsys.readouterr().out
