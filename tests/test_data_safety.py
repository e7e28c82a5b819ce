"""Data safety: every command that writes touches nothing but its output, refuses to replace what is
not its own, replaces a condensed set only with --overwrite (never its own source), leaves nothing
half-written, and cleans the leftovers of killed writes (only its own, by their exact names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from condensed import CondensedSet, load_condensed
from condensed.set import save_condensed
from harness.cli import main
from harness.errors import ConfigError
from harness.io import HOST_TAG, atomic_write_json, clean_leftovers

TABLE = """\
name: safety
defaults:
  dataset: digits
  protocol: vico-dc
  protocol_overrides: {epochs: 1, batch_size: 64, test_batch: 500}
  model: convnet_d2
  kind: evaluate
  source: random_real
  runs: 1
rows:
  - label: random real
columns:
  - ipc: 1
"""


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too): file bytes, None for folders."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def assert_kept(before: dict[str, bytes | None], root: Path) -> None:
    after = snapshot(root)
    for k, v in before.items():
        assert k in after and after[k] == v, f"{root / k} changed or vanished"
    temps = [k for k in after if ".ddtmp-" in k or ".ddold-" in k]
    assert not temps, f"temporaries left behind: {temps}"


def cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "error:" in lines[0], err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture()
def vico(tmp_path: Path) -> Path:
    """A two-experiment VICO file of 10 MNIST-shaped images (one per class)."""
    g = torch.Generator().manual_seed(0)
    p = tmp_path / "res_DC_MNIST_ConvNet_1ipc.pt"
    torch.save({"data": [[torch.randn(10, 1, 28, 28, generator=g), torch.arange(10)],
                         [torch.randn(10, 1, 28, 28, generator=g), torch.arange(10)]]}, p)
    return p


@pytest.fixture()
def digits_set(tmp_path: Path) -> Path:
    """A 3-per-class condensed set of real digits (8x8), saved with the library."""
    from harness.data import load_dataset
    from harness.evaluate import random_per_class

    train = load_dataset("digits", "train")
    sub = train.subset(random_per_class(train.labels, 3, seed=0))
    d = tmp_path / "src"
    CondensedSet(images=sub.normalized(), labels=sub.labels, num_classes=10, dataset="digits", method="random",
                 mean=sub.mean, std=sub.std).save(d)
    return d


@pytest.fixture()
def busy(tmp_path: Path) -> Path:
    """A folder of someone else's files: a note, a hidden file and a sub-folder."""
    w = tmp_path / "W"
    (w / "sub").mkdir(parents=True)
    (w / "notes.txt").write_text("notes\n")
    (w / ".hidden").write_bytes(b"\x00\x01")
    (w / "sub" / "keep.bin").write_bytes(os.urandom(64))
    return w


# --- the cases the issue names ----------------------------------------------------------------------
def test_import_into_a_folder_with_notes_is_refused(tmp_path, vico, capsys):
    d = tmp_path / "D"
    d.mkdir()
    (d / "notes.txt").write_text("notes\n")
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", d)
    assert rc == 2
    one_line_error(err, "--out", "notes.txt")
    assert snapshot(tmp_path) == before
    rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", d, "--overwrite")
    assert rc == 2 and "notes.txt" in err and snapshot(tmp_path) == before  # --overwrite replaces sets only


def test_overwrite_replaces_a_condensed_set_only_when_asked(tmp_path, vico, capsys):
    s = tmp_path / "S"
    assert cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", s)[0] == 0
    first = snapshot(s)
    rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "1", "--out", s)
    assert rc == 2
    one_line_error(err, "already holds a condensed set", "--overwrite")
    assert snapshot(s) == first
    rc, out, _ = cli(capsys, "import", "vico", vico, "--experiment", "1", "--out", s, "--overwrite")
    assert rc == 0 and "wrote" in out
    data = torch.load(vico)["data"]
    assert torch.equal(load_condensed(s).images, data[1][0].float())  # experiment 1 replaced experiment 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S", vico.name]  # nothing left next to it
    # a multi-experiment import is one output: a folder of exp<k> sets, replaced whole with --overwrite
    m = tmp_path / "M"
    assert cli(capsys, "import", "vico", vico, "--out", m)[0] == 0
    assert sorted(p.name for p in m.iterdir()) == ["exp0", "exp1"]
    assert cli(capsys, "import", "vico", vico, "--out", m)[0] == 2
    assert cli(capsys, "import", "vico", vico, "--out", m, "--overwrite")[0] == 0
    (m / "exp0" / "mine.txt").write_text("x")  # no longer only ours: never replaced
    before = snapshot(m)
    assert cli(capsys, "import", "vico", vico, "--out", m, "--overwrite")[0] == 2
    assert snapshot(m) == before


def test_shrink_never_replaces_its_own_source(tmp_path, digits_set, capsys):
    before = snapshot(tmp_path)
    for out in (digits_set, tmp_path / "x" / ".." / "src", tmp_path):  # itself, spelled otherwise, a parent
        rc, _, err = cli(capsys, "shrink", digits_set, "--to-ipc", "1", "--rule", "random", "--out", out,
                         "--overwrite")
        assert rc == 2
        one_line_error(err, "source")
        assert snapshot(tmp_path) == before


def test_import_out_dot_and_bad_targets_are_one_line_errors(tmp_path, vico, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", ".")
    assert rc == 2
    one_line_error(err, "current folder")
    rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", vico)
    assert rc == 2
    one_line_error(err, "source")
    rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", vico / "inside")
    assert rc == 2
    one_line_error(err, "is a file")
    assert snapshot(tmp_path) == before


# --- every command that writes ----------------------------------------------------------------------
@pytest.mark.slow
def test_every_writing_command_leaves_other_files_alone(tmp_path, busy, vico, digits_set, capsys):
    """Folder outputs pointed at a busy folder are refused before any work; file and container outputs
    written into it leave every other file byte-identical and no temporaries."""
    w = busy
    refused = [  # (argv, what the one-line error names)
        (["import", "vico", vico, "--experiment", "0", "--out", w], "--out"),
        (["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "1", "--out", w],
         "--out"),
        (["shrink", digits_set, "--to-ipc", "1", "--rule", "random", "--out", w], "--out"),
        (["dynamics", "--dataset", "digits", "--epochs", "1", "--model", "dc_mlp", "--out", w], "--out"),
        (["evaluate", "--dataset", "digits", "--ipc", "1", "--runs", "1", "--epochs", "1", "--out", w], "--out"),
        (["select", "--recipe", "random", "--labels", w / "labels.npy", "--count", "5", "--out", w], "--out"),
        (["score", "--dynamics", w / "dyn", "--method", "el2n", "--out", w], "--out"),
        (["coreset", "--dataset", "digits", "--recipe", "random", "--count", "20", "--out", w], "--out"),
        (["coreset", "--dataset", "digits", "--recipe", "random", "--count", "20", "--workdir", w / "notes.txt"],
         "--workdir"),
        (["table", "run", tmp_path / "t.yaml", "--results", w / "notes.txt"], "--results"),
        (["table", "run", tmp_path / "t.yaml", "--results", tmp_path / "res", "--report", w / "notes.txt"],
         "--report"),
        (["table", "report", tmp_path / "t.yaml", "--results", w / "notes.txt"], "--results"),
    ]
    (tmp_path / "t.yaml").write_text(TABLE)
    before = snapshot(w)
    for argv, option in refused:
        rc, _, err = cli(capsys, *argv)
        assert rc == 2, (argv, err)
        one_line_error(err, f"{option} {argv[argv.index(option) + 1]}")
        assert snapshot(w) == before, argv
    assert not (tmp_path / "res").exists()

    np.save(w / "labels.npy", np.repeat(np.arange(10), 5))
    written = [
        ["import", "vico", vico, "--experiment", "0", "--out", w / "set"],
        ["condense", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "1",
         "--param", 'model_kwargs={"width": 8}', "--param", "batch_real=16", "--out", w / "dm"],
        ["shrink", digits_set, "--to-ipc", "1", "--rule", "random", "--out", w / "small"],
        ["dynamics", "--dataset", "digits", "--epochs", "1", "--model", "dc_mlp", "--out", w / "dyn"],
        ["score", "--dynamics", w / "dyn", "--method", "el2n", "--out", w / "s.npy"],
        ["select", "--recipe", "random", "--labels", w / "labels.npy", "--count", "5", "--out", w / "k.npy"],
        ["evaluate", "--dataset", "digits", "--ipc", "1", "--runs", "1", "--epochs", "1", "--model", "convnet_d2",
         "--out", w / "r.json"],
        ["coreset", "--dataset", "digits", "--recipe", "random", "--count", "20", "--epochs-dynamics", "1",
         "--epochs-train", "1", "--runs", "1", "--model", "dc_mlp", "--workdir", w, "--out", w / "c.json"],
        ["table", "run", tmp_path / "t.yaml", "--results", w, "--report", w / "sub", "--no-progress"],
    ]
    for argv in written:
        before = snapshot(w)
        rc, _, err = cli(capsys, *argv)
        assert rc == 0, (argv, err)
        assert_kept(before, w)
    assert load_condensed(w / "small").ipc == 1 and np.load(w / "k.npy").size == 5
    assert json.loads((w / "r.json").read_text())["accuracies"]


def test_evaluate_out_folder_fails_before_the_evaluation(tmp_path, capsys, monkeypatch):
    import harness.cli.evaluate as hc

    def boom(*a, **k):
        raise AssertionError("the evaluation ran although --out was bad")

    monkeypatch.setattr(hc, "load_dataset", boom)
    (tmp_path / "out").mkdir()
    rc, _, err = cli(capsys, "evaluate", "--dataset", "digits", "--ipc", "1", "--out", tmp_path / "out")
    assert rc == 2
    one_line_error(err, "is a folder")


# --- atomic outputs and leftovers of killed writes ---------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftovers_are_cleaned_only_when_ours_and_dead(tmp_path, vico, capsys):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_dir = tmp_path / f".S.ddtmp-{HOST_TAG}-{dead}-abcd1234"
        (dead_dir / "x").mkdir(parents=True)
        dead_old = tmp_path / f".S.ddold-{HOST_TAG}-{dead}-abcd1234"
        dead_old.mkdir()
        live_dir = tmp_path / f".S.ddtmp-{HOST_TAG}-{live.pid}-abcd1234"
        live_dir.mkdir()
        foreign = tmp_path / f".S.ddtmp-0badc0de-{dead}-abcd1234"
        foreign.mkdir()
        others = [tmp_path / ".S.notes", tmp_path / f".T.ddtmp-{HOST_TAG}-{dead}-abcd1234",
                  tmp_path / f".S.ddtmp-{HOST_TAG}-{dead}-abcd1234.bak"]
        for p in others:
            p.write_text("not ours")
        rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", tmp_path / "S")
        assert rc == 0, err
        assert not dead_dir.exists() and not dead_old.exists()
        assert live_dir.exists() and foreign.exists() and all(p.read_text() == "not ours" for p in others)
        assert f"removed {dead_dir}" in err and f"left in place: {foreign}" in err
    finally:
        live.kill()
        live.wait()


def test_a_set_moved_aside_by_a_killed_swap_is_put_back(tmp_path, vico, capsys):
    s = tmp_path / "S"
    assert cli(capsys, "import", "vico", vico, "--experiment", "0", "--out", s)[0] == 0
    before = snapshot(s)
    dead = _dead_pid()
    # killed between the two renames: S moved aside, the new version still under its temporary name
    os.rename(s, tmp_path / f".S.ddold-{HOST_TAG}-{dead}-abcd1234")
    (tmp_path / f".S.ddtmp-{HOST_TAG}-{dead}-wxyz9876").mkdir()
    rc, _, err = cli(capsys, "import", "vico", vico, "--experiment", "1", "--out", s)
    assert rc == 2 and "restored" in err and "already holds a condensed set" in err  # back, so not replaced
    assert snapshot(s) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S", vico.name]


def test_file_writes_clean_dead_temporaries(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".r.json.ddtmp-{HOST_TAG}-{dead}-abcd1234.tmp"
    stale.write_text("{half")
    legacy = tmp_path / ".r.json.k2j4h5g6.tmp"  # an older version's name: reported, never removed
    legacy.write_text("{half")
    assert any(str(legacy) in n for n in clean_leftovers(tmp_path / "r.json"))
    atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert not stale.exists() and legacy.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [legacy.name, "r.json"]
    assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def _small() -> CondensedSet:
    return CondensedSet(images=torch.zeros(3, 1, 4, 4), labels=torch.arange(3), num_classes=3, dataset="x",
                        method="t", space="pixel")


def test_save_condensed_library_guards(tmp_path, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("notes")
    with pytest.raises(ConfigError, match="notes.txt"):
        save_condensed(_small(), d)
    assert [p.name for p in d.iterdir()] == ["notes.txt"]
    s = save_condensed(_small(), tmp_path / "s")
    with pytest.raises(ConfigError, match="overwrite=True"):
        save_condensed(_small(), s, overwrite=False)
    before = snapshot(s)

    import condensed.set as cset

    def half(cs, folder):
        (Path(folder) / "images.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(cset, "write_set_files", half)
    with pytest.raises(KeyboardInterrupt):
        save_condensed(_small(), s)
    assert snapshot(s) == before  # the old set, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "s"]  # no temporary left
