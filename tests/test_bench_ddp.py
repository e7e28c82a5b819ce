"""DDP path: two gloo CPU processes train on a tiny image folder; stats land index-aligned, a killed
run resumes bit for bit, subset training reports the test accuracy, and the streamed coreset flow
(torchrun) and its bench cell run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import ImageFolderStream
from harness.data.specs import IMAGENET_MEAN, IMAGENET_STD
from harness.distributed import DDPConfig, StreamTransform, spawn_local
from harness.dynamics import STATS, Dynamics
from harness.engine.protocol import TrainProtocol
from harness.engine.trainer import seeded_model
from harness.errors import ConfigError
from harness.models import create_model


def _folder(root, classes=3, per_class=7, size=12):
    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = (torch.rand(size, size, 3, generator=g) * 60 + 80 * c).clamp(0, 255).byte().numpy()
            Image.fromarray(arr).save(d / f"{i:03d}.png")
    return classes * per_class


def test_ddp_two_gloo_processes_gather_index_aligned_stats(tmp_path):
    n = _folder(tmp_path / "imgs")  # 21 samples: not divisible by 2 ranks x batch 4 (padding path)
    # lr 0: the model stays at its seeded init, so every gathered loss can be checked against a
    # single-process forward pass in dataset order (a misaligned index would show up as a mismatch)
    proto = TrainProtocol("ddp-test", model="convnet", epochs=2, batch_size=8, lr=0.0, weight_decay=0.0, nesterov=True,
                          schedule="cosine", augment="none", runs=1)  # global batch 8 = 2 ranks x 4
    cfg = DDPConfig(proto, root=str(tmp_path / "imgs"), out=str(tmp_path / "out"), img_size=12, num_workers=1,
                    seed=0, backend="gloo")
    spawn_local(cfg, world_size=2)
    dyn = Dynamics.open(tmp_path / "out")  # an ordinary dynamics directory, every scorer reads it
    assert dyn.n == n and dyn.epochs == 2 and dyn.meta["config"]["world_size"] == 2
    stats = {s: np.asarray(dyn.stat(s)) for s in STATS}
    for name, arr in stats.items():
        assert arr.shape == (2, n), name
        rows = arr[1:] if name == "kl_prev" else arr  # kl_prev is NaN at epoch 0 by definition
        assert np.isfinite(rows).all(), f"{name}: some sample missing from the gathered stats"
    assert set(np.unique(stats["correct"])) <= {0.0, 1.0}
    assert ((stats["target_prob"] > 0) & (stats["target_prob"] <= 1)).all()
    assert ((stats["logit_margin"] > 0) == (stats["correct"] == 1)).all()
    assert np.allclose(stats["kl_prev"][1], 0.0, atol=1e-5)  # lr 0: the same model both epochs
    assert (dyn.labels == ds_labels(cfg.root)).all()
    ds = ImageFolderStream(cfg.root)
    tf = StreamTransform(12, IMAGENET_MEAN, IMAGENET_STD, "none", 0)
    model = seeded_model(lambda: create_model("convnet", num_classes=3, in_chans=3, img_size=12), 0)
    model.train()  # DDP records training-mode logits (instance norm: no running stats)
    with torch.no_grad():
        x = torch.stack([tf(ds[i][0], 0, i) for i in range(n)])
        loss = torch.nn.functional.cross_entropy(model(x), ds.targets, reduction="none").numpy()
    np.testing.assert_allclose(stats["loss"][0], loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["loss"][1], loss, rtol=1e-4, atol=1e-5)
    json.dumps(dyn.meta)


def ds_labels(root) -> np.ndarray:
    return ImageFolderStream(root).targets.numpy()


IO_FIELDS = ("root", "out", "img_size", "num_workers", "seed", "backend", "classlist", "record", "subset", "test_root",
             "until_epoch")


def _cfg(tmp_path, out, **kw):
    """A DDP run of 2 ranks: protocol fields and I/O fields in one call (``batch_size`` is the global batch)."""
    proto = dict(model="convnet", epochs=3, batch_size=8, lr=0.05, weight_decay=5e-4, nesterov=True,
                 schedule="cosine", augment="crop_flip", runs=1)
    io = dict(root=str(tmp_path / "imgs"), out=str(tmp_path / out), img_size=12, num_workers=0, seed=3, backend="gloo")
    for k, v in kw.items():
        (io if k in IO_FIELDS else proto)[k] = v
    return DDPConfig(TrainProtocol("ddp-test", **proto), **io)


def test_ddp_killed_run_resumes_bit_identical(tmp_path):
    _folder(tmp_path / "imgs")
    full = _cfg(tmp_path, "full")
    spawn_local(full)
    cut = _cfg(tmp_path, "cut", num_workers=1)  # another worker count: the same numbers by construction
    spawn_local(cut, stop_after=1)  # the "kill": one epoch done, then the processes exit
    part = Dynamics.open(tmp_path / "cut")
    assert part.epochs == 1 and not (tmp_path / "cut" / "result.json").exists()
    spawn_local(cut)
    a, b = Dynamics.open(tmp_path / "full"), Dynamics.open(tmp_path / "cut")
    assert a.epochs == b.epochs == 3 and b.meta["finished"]
    for s in STATS:
        np.testing.assert_array_equal(np.asarray(a.stat(s)), np.asarray(b.stat(s)), err_msg=s)
    ra = json.loads((tmp_path / "full" / "result.json").read_text())
    rb = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert ra["last_epoch_train_acc"] == rb["last_epoch_train_acc"]
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["model"]
    cb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)


def test_ddp_cut_dynamics_run_is_a_full_runs_first_epochs_and_a_longer_request_resumes_it(tmp_path):
    _folder(tmp_path / "imgs")
    full = _cfg(tmp_path, "full")
    spawn_local(full)
    cut = _cfg(tmp_path, "cut", until_epoch=1)  # what a score reading one epoch asks for
    spawn_local(cut)
    res = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert res["epochs_trained"] == 1 and res["epochs_total"] == 3
    part, whole = Dynamics.open(tmp_path / "cut"), Dynamics.open(tmp_path / "full")
    assert part.epochs == 1 and not part.meta.get("finished")
    for s in STATS:  # the cut run follows the whole protocol's schedule: its rows are the full run's first
        np.testing.assert_array_equal(np.asarray(part.stat(s))[:1], np.asarray(whole.stat(s))[:1], err_msg=s)
    stamp = (tmp_path / "cut" / "result.json").stat().st_mtime_ns
    spawn_local(cut)  # enough epochs recorded: reused, not retrained
    assert (tmp_path / "cut" / "result.json").stat().st_mtime_ns == stamp
    spawn_local(_cfg(tmp_path, "cut"))  # the whole protocol: resumes the cut run from its checkpoint
    resumed = Dynamics.open(tmp_path / "cut")
    assert resumed.epochs == 3 and resumed.meta["finished"]
    for s in STATS:
        np.testing.assert_array_equal(np.asarray(resumed.stat(s)), np.asarray(whole.stat(s)), err_msg=s)
    assert json.loads((tmp_path / "cut" / "result.json").read_text())["epochs_trained"] == 3
    with pytest.raises(ConfigError, match="until_epoch"):
        _cfg(tmp_path, "x", record=False, until_epoch=1)


def test_ddp_bf16_runs_the_forward_pass_under_autocast(tmp_path):
    n = _folder(tmp_path / "imgs")
    out = {}
    for precision in ("fp32", "bf16"):  # lr 0: the recorded losses are the seeded init's forward pass
        cfg = _cfg(tmp_path, precision, epochs=1, lr=0.0, weight_decay=0.0, augment="none", precision=precision)
        spawn_local(cfg)
        out[precision] = np.asarray(Dynamics.open(tmp_path / precision).stat("loss"))[0]
    ds = ImageFolderStream(tmp_path / "imgs")
    tf = StreamTransform(12, IMAGENET_MEAN, IMAGENET_STD, "none", 0)
    model = seeded_model(lambda: create_model("convnet", num_classes=3, in_chans=3, img_size=12), 3)
    x = torch.stack([tf(ds[i][0], 0, i) for i in range(n)])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = torch.nn.functional.cross_entropy(model(x).float(), ds.targets, reduction="none").numpy()
    np.testing.assert_allclose(out["bf16"], bf16, rtol=1e-2, atol=1e-2)
    assert not np.array_equal(out["bf16"], out["fp32"])  # autocast was on
    np.testing.assert_allclose(out["bf16"], out["fp32"], rtol=0.1, atol=0.05)


def test_ddp_subset_training_reports_final_test_accuracy(tmp_path):
    _folder(tmp_path / "imgs")
    _folder(tmp_path / "val", per_class=4)
    kept = np.array([0, 2, 3, 7, 9, 14, 15, 20])
    np.save(tmp_path / "kept.npy", kept)
    cfg = _cfg(tmp_path, "sub", record=False, subset=str(tmp_path / "kept.npy"), test_root=str(tmp_path / "val"),
               epochs=2)
    spawn_local(cfg)
    res = json.loads((tmp_path / "sub" / "result.json").read_text())
    assert res["n_train"] == kept.size and res["n_folder"] == 21 and res["n_test"] == 12
    assert not (tmp_path / "sub" / "meta.json").exists()  # record=False: no dynamics written
    # the reported accuracy is the final model's, recomputed here in one process
    state = torch.load(tmp_path / "sub" / "checkpoint.pt", weights_only=True)["model"]
    model = create_model("convnet", num_classes=3, in_chans=3, img_size=12)
    model.load_state_dict(state)
    model.eval()
    test = ImageFolderStream(tmp_path / "val")
    tf = StreamTransform(12, IMAGENET_MEAN, IMAGENET_STD, "eval", 0)
    with torch.no_grad():
        pred = model(torch.stack([tf(test[i][0], 0, i) for i in range(len(test))])).argmax(1)
    correct = int((pred == test.targets).sum())
    assert res["test_correct"] == correct
    assert res["test_accuracy"] == correct / 12  # a fraction, like every in-memory cell (issue 11 item 10)


def test_ddp_iteration_budget_runs_exactly_k_global_steps_and_resumes(tmp_path):
    """8 kept images, 2 ranks x batch 2 (global 4): 2 global steps per pass; 5 iterations = 2 + 2 + 1 (CCS-style
    budget)."""
    import math

    _folder(tmp_path / "imgs")
    np.save(tmp_path / "kept.npy", np.array([0, 2, 3, 7, 9, 14, 15, 20]))
    kw = dict(record=False, subset=str(tmp_path / "kept.npy"), batch_size=4, iterations=5, lr=0.1, eta_min=0.01)
    full = _cfg(tmp_path, "it", **kw)
    spawn_local(full)
    res = json.loads((tmp_path / "it" / "result.json").read_text())
    ck = torch.load(tmp_path / "it" / "checkpoint.pt", weights_only=True)
    assert res["optimizer_steps"] == 5 and ck["epoch"] == 3
    # every step sets its lr first: the last one used is the cosine at step 4 of 5, not step 5 (= eta_min)
    last_lr = ck["optimizer"]["param_groups"][0]["lr"]
    assert last_lr == pytest.approx(0.01 + (0.1 - 0.01) * (1 + math.cos(math.pi * 4 / 5)) / 2, rel=1e-12)
    cut = _cfg(tmp_path, "it-cut", **kw)
    spawn_local(cut, stop_after=1)  # killed after the first pass
    assert torch.load(tmp_path / "it-cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    spawn_local(cut)
    cb = torch.load(tmp_path / "it-cut" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(ck["model"][k], cb["model"][k]) for k in ck["model"])
    with pytest.raises(ConfigError, match="whole epochs"):
        _cfg(tmp_path, "x", iterations=5)  # a dynamics run (record=True) cannot stop mid-pass


def test_ddp_steps_the_registered_schedule_vico_halving_with_a_fresh_optimiser(tmp_path):
    """VICO's schedule under DDP, as in the sequential and ensemble trainers (harness.engine.schedules): 1 + 1
    epochs, lr x0.1 after epoch epochs // 2 + 1 = 1 with a fresh optimiser (no momentum buffers)."""
    _folder(tmp_path / "imgs")
    cfg = _cfg(tmp_path, "vico", record=False, schedule="vico_half", epochs=1, extra_epoch=True, augment="none")
    spawn_local(cfg, stop_after=1)  # after epoch 0: the first optimiser, with its momentum
    first = torch.load(tmp_path / "vico" / "checkpoint.pt", weights_only=True)
    assert first["epoch"] == 1 and first["optimizer"]["param_groups"][0]["lr"] == 0.05 and first["optimizer"]["state"]
    spawn_local(cfg)  # resumes at epoch 1, then halves
    last = torch.load(tmp_path / "vico" / "checkpoint.pt", weights_only=True)
    assert last["epoch"] == 2 and last["optimizer"]["param_groups"][0]["lr"] == 0.05 * 0.1
    assert last["optimizer"]["state"] == {}  # a fresh SGD: momentum buffers dropped


def _report_prints_percent(tmp_path, cfg, res):
    """The streamed cell's result goes through the store and the report like any cell: one unit (fractions
    in records, percent when printed), so an ImageNet table cannot print ~6000%."""
    import re

    from harness.bench.cells import expand
    from harness.bench.report import write_reports
    from harness.bench.spec import parse_spec
    from harness.bench.store import ResultStore

    text = (
        "name: streamed\ndefaults: {kind: coreset, dataset: imagenet, recipe: el2n, protocol: ccs, model: convnet,\n"
        "  protocol_overrides: {epochs: 1, batch_size: 4}, follows: CCS}\n"
        "rows: [{label: el2n}]\ncolumns: [{prune_rate: 0.5}]\n")
    spec = parse_spec(text, "streamed.yaml")
    cell = expand(spec, "full")[0]
    unit = cell.units()[0]
    ResultStore(tmp_path / "res").write(spec.name, cell.key, unit.key, {
        "cell": cell.key, "run": 0, "accuracies": list(res.accuracies), "protocol_text": res.protocol_text})
    md = write_reports(spec, tmp_path / "res", tmp_path / "rep", "full", plots=False)["md"].read_text()
    shown = float(re.search(r"\| el2n \| CCS \| ([0-9.]+) ± ", md).group(1))
    assert 0 <= shown <= 100 and shown == pytest.approx(100 * res.accuracies[0], abs=0.005)


def test_ddp_error_on_one_rank_ends_the_run_instead_of_hanging(tmp_path):
    """Rank 0 alone reads the checkpoint; when it refuses it, the other rank waits in a broadcast. The failing
    rank must not wait in the closing barrier (the run would hang until gloo's 30-minute timeout)."""
    import subprocess
    import sys

    _folder(tmp_path / "imgs")
    (tmp_path / "out").mkdir()
    torch.save({"config": {"another": "run"}, "epoch": 1}, tmp_path / "out" / "checkpoint.pt")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_bench_ddp import _cfg; "
            "from pathlib import Path; from harness.distributed import spawn_local; "
            "spawn_local(_cfg(Path(sys.argv[2]), 'out'))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert "a checkpoint of another run" in proc.stderr


def test_ddp_config_refuses_recording_a_subset(tmp_path):
    with pytest.raises(ConfigError, match="record"):
        _cfg(tmp_path, "x", subset="kept.npy")
    with pytest.raises(ConfigError, match="no streamed form"):
        _cfg(tmp_path, "x", augment="dsa", dsa_strategy="color_crop")
    with pytest.raises(ConfigError, match="cutmix"):
        _cfg(tmp_path, "x", cutmix_p=0.5)
    with pytest.raises(ConfigError, match="loss soft_ce"):
        _cfg(tmp_path, "x", loss="soft_ce")


def test_streamed_coreset_cell_runs_dynamics_select_and_train_under_torchrun(tmp_path):
    from harness.bench.kinds import Run, RunContext, create_cell_kind
    from harness.dynamics import Dynamics as Dyn
    from harness.pruning.recipes import parse_recipe, select_with_recipe
    from harness.pruning.select import Budget

    root = tmp_path / "data"
    _folder(root / "imagenet" / "train", per_class=8)
    _folder(root / "imagenet" / "val", per_class=3)
    cfg = {"kind": "coreset", "dataset": "imagenet", "recipe": "el2n", "prune_rate": 0.5, "protocol": "ccs",
           "protocol_overrides": {"epochs": 1, "batch_size": 4}, "dynamics_protocol": "ccs", "dynamics_epochs": 2,
           "model": "convnet", "seed": 0, "nproc": 2, "num_workers": 0, "img_size": 16}
    ctx = RunContext(data_root=str(root), artifacts_dir=str(tmp_path / "art"))
    kind = create_cell_kind("coreset")

    def run_coreset_cell(_, cell_cfg, ctx):  # one run of the cell, through the coreset kind
        ((run, result),) = kind.run(kind.config(cell_cfg), [Run(0, int(cell_cfg["seed"]))], ctx)
        assert run == Run(0, 0)
        return result

    with pytest.raises(ConfigError, match="batch_size"):  # the global batch must split over the processes
        run_coreset_cell(None, {**cfg, "protocol_overrides": {"epochs": 1, "batch_size": 3}}, ctx)
    res = run_coreset_cell(None, {**cfg, "protocol_overrides": {"epochs": 1, "batch_size": 4}}, ctx)
    info = res.extra
    assert info["n_train"] == 24 and info["n_kept"] == 12 and sum(info["class_counts"]) == 12
    assert len(res.accuracies) == 1 and 0 <= res.accuracies[0] <= 1  # a fraction, as in-memory cells record
    _report_prints_percent(tmp_path, cfg, res)
    dyn = Dyn.open(info["dynamics_dir"])
    assert dyn.epochs == 2 and dyn.meta["config"]["world_size"] == 2
    kept = select_with_recipe(parse_recipe("el2n"), dyn, dyn.labels, Budget.prune_rate(0.5), seed=0, num_classes=3)
    out = next((tmp_path / "art" / "coreset" / "coreset").iterdir())
    np.testing.assert_array_equal(np.load(out / "kept.npy"), kept)
    stamp = (out / "run0" / "result.json").stat().st_mtime_ns
    again = run_coreset_cell(None, cfg, ctx)  # finished runs are reused, not retrained
    assert again.accuracies == res.accuracies
    assert (out / "run0" / "result.json").stat().st_mtime_ns == stamp

    # random reads no dynamics: none are trained (a fresh artifacts folder, so nothing is reused)
    ctx2 = RunContext(data_root=str(root), artifacts_dir=str(tmp_path / "art2"))
    rnd = run_coreset_cell(None, {**cfg, "recipe": "random"}, ctx2)
    assert rnd.extra["dynamics_dir"] is None and rnd.extra["n_kept"] == 12
    assert not list((tmp_path / "art2").rglob("meta.json"))  # no dynamics recording anywhere
