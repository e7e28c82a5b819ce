"""benchmarks/gpu_check.sh: the toy CPU run writes one JSON with every section and its numbers; the Tiny-ImageNet
to image-folder layout it builds for the DDP section is right; a failing section is recorded, not hidden."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _driver():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tiny_imagenet_becomes_imagenet_folders(data_root: Path, tmp_path: Path) -> None:
    """The first classes (sorted wnids), the first training images in numeric order, and val images sorted into
    the class folder val_annotations.txt names."""
    import tarfile

    tar = data_root / "tiny-imagenet-200-subset.tar.gz"
    if not tar.is_file():
        pytest.skip(f"{tar} not found")
    got = _driver().imagenet_layout(tar, tmp_path, classes=2, train_per_class=3, val_per_class=2)
    assert got == {"classes": 2, "train": 6, "val": 4}
    with tarfile.open(tar) as tf:
        wnids = sorted(tf.extractfile("tiny-imagenet-200/wnids.txt").read().decode().split())[:2]
        ann = dict(line.split("\t")[:2] for line in
                   tf.extractfile("tiny-imagenet-200/val/val_annotations.txt").read().decode().splitlines())
    train = tmp_path / "imagenet" / "train"
    assert sorted(p.name for p in train.iterdir()) == wnids
    for w in wnids:
        assert sorted(p.name for p in (train / w).iterdir()) == [f"{w}_{i}.JPEG" for i in range(3)]
        val = sorted((tmp_path / "imagenet" / "val" / w).iterdir())
        assert len(val) == 2 and all(ann[p.name] == w for p in val)
        assert (train / w / f"{w}_0.JPEG").read_bytes()[:2] == b"\xff\xd8"  # a JPEG, copied whole


def test_failed_section_is_recorded_and_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--toy", "--sections", "ddp_coreset",
                           "--data-root", str(tmp_path / "nothing"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert res["ddp_coreset"]["ok"] is False and "tiny-imagenet" in res["ddp_coreset"]["error"]
    assert set(res) == {"meta", "ddp_coreset"}


@pytest.mark.slow
def test_toy_cpu_run_writes_every_section_with_numbers(data_root: Path, tmp_path: Path) -> None:
    """``--device cpu --toy``: ensemble evaluation (vmap path forced), DDP coreset on 2 gloo processes, speed suite.

    About a minute on an idle 2-core CPU (most of it is process start-ups: ddbench, torchrun and its ranks,
    pytest); several minutes when the CPU is shared.
    """
    out = tmp_path / "check.json"
    proc = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--toy", "--out", str(out), "--data-root",
                           str(data_root), "--workdir", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    assert set(res) == {"meta", "ensemble_eval", "ddp_coreset", "speed_suite"}
    assert res["meta"]["device"] == "cpu" and res["meta"]["toy"] is True and res["meta"]["wall_s"] > 0
    assert all(res[s]["ok"] for s in ("ensemble_eval", "ddp_coreset", "speed_suite"))

    ens = res["ensemble_eval"]
    assert ens["path"] == "ensemble" and ens["runs"] == 2 and len(ens["accuracies"]) == 2
    assert ens["epochs"] == 2 and ens["wall_s"] > 0  # --epochs 1 + VICO's extra epoch
    assert all(0 <= a <= 1 for a in ens["accuracies"]) and ens["mean"] == pytest.approx(sum(ens["accuracies"]) / 2)

    ddp = res["ddp_coreset"]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 2 and ddp["img_size"] == 16
    assert ddp["n_train"] == 4 * 8 and ddp["n_kept"] == 16 and 0 <= ddp["test_accuracy"] <= 1
    assert ddp["test_accuracy"] * 16 == pytest.approx(round(ddp["test_accuracy"] * 16))  # k of 16 val images

    speed = res["speed_suite"]
    assert speed["pytest_exit"] == 0 and speed["failed_cases"] == []
    names = {b["name"] for b in speed["benchmarks"]}
    assert names == {"test_bench_evaluate[1-reference]", "test_bench_evaluate[1-ours-fp32]"}
    for b in speed["benchmarks"]:
        assert b["mean_s"] > 0 and b["extra_info"]["per_step_s"] > 0 and b["extra_info"]["epochs"] == 2
