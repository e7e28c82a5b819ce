"""Shared artifacts under concurrency: lock files exclude, a waiter reuses or resumes the holder's work,
a dead holder's lock is taken over, and table runners / ``table status`` tell live locks from dead ones."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.bench.runner import table_status, table_units
from harness.bench.spec import parse_spec
from harness.bench.store import ResultStore
from harness.cli import main
from harness.locks import HOST

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

RECORD = r"""
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from harness.data import load_dataset
from harness.dynamics import record_dynamics
from harness.engine.protocol import create_protocol

out, epochs, block_at, gate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
trained = []

def progress(e, t):
    trained.append(e)
    if e == block_at:  # hold the lock mid-run until the test opens the gate
        (gate.parent / "blocked").write_text(str(os.getpid()))
        while not gate.exists():
            time.sleep(0.02)

proto = create_protocol("ccs", "digits", model="dc_mlp", epochs=epochs, batch_size=256)
dyn = record_dynamics(load_dataset("digits", "train"), proto, seed=0, out_dir=out, progress=progress)
print(json.dumps({"trained": trained, "epochs": dyn.epochs}))
"""

COUNT = r"""
import sys, time
from pathlib import Path
from harness.locks import hold

lock, counter, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    with hold(lock, poll_s=0.001):
        v = int(counter.read_text())
        time.sleep(0.002)  # read-modify-write: without the lock, the two processes lose updates
        counter.write_text(str(v + 1))
"""


def _until(cond, what: str, procs=(), limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        for p in procs:
            assert p.poll() is None, f"process exited early while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start(script: str, *args, err: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=open(err, "w"), text=True)


def test_hold_excludes_across_processes(tmp_path):
    counter = tmp_path / "n"
    counter.write_text("0")
    procs = [_start(COUNT, tmp_path / "x.lock", counter, 25, err=tmp_path / f"e{i}") for i in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, (tmp_path / "e0").read_text() + (tmp_path / "e1").read_text()
    assert counter.read_text() == "50"  # no lost update
    assert not (tmp_path / "x.lock").exists()


@functools.lru_cache(maxsize=1)
def _reference(epochs: int):
    from harness.data import load_dataset
    from harness.dynamics import record_dynamics
    from harness.engine.protocol import create_protocol

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        proto = create_protocol("ccs", "digits", model="dc_mlp", epochs=epochs, batch_size=256)
        return record_dynamics(load_dataset("digits", "train"), proto, seed=0, out_dir=None)
    finally:
        torch.set_num_threads(threads)


def _two_recorders(tmp_path: Path, kill_holder: bool):
    """Start two identical recorders on one folder; whichever takes the lock stops at epoch 2 until the
    test opens the gate (or kills it); returns the folder and (holder, waiter) outputs."""
    out, gate = tmp_path / "dyn", tmp_path / "gate"
    procs = [_start(RECORD, out, 4, 2, gate, err=tmp_path / f"{i}.err") for i in range(2)]
    _until(lambda: (tmp_path / "blocked").exists() and (tmp_path / "blocked").read_text(),
           "a recorder to reach epoch 2", procs)
    a, b = sorted(procs, key=lambda p: p.pid != int((tmp_path / "blocked").read_text()))  # holder first
    assert (out / ".lock").exists()
    b_err = tmp_path / f"{procs.index(b)}.err"
    _until(lambda: "is recording these dynamics; waiting" in b_err.read_text(), "the other recorder to wait", procs)
    if kill_holder:
        a.kill()
        a.wait()
    else:
        gate.touch()
        assert a.wait(timeout=120) == 0
    assert b.wait(timeout=120) == 0, b_err.read_text()
    res_b = json.loads(b.stdout.read())
    res_a = None if kill_holder else json.loads(a.stdout.read())
    return out, res_a, res_b


@pytest.mark.slow
def test_second_recorder_waits_then_reuses_the_finished_run(tmp_path):
    from harness.dynamics import STATS, Dynamics

    out, res_a, res_b = _two_recorders(tmp_path, kill_holder=False)
    assert res_a == {"trained": [1, 2, 3, 4], "epochs": 4}
    assert res_b == {"trained": [], "epochs": 4}  # waited, then found the run finished: no epoch written twice
    shared, single = Dynamics.open(out), _reference(4)
    assert shared.meta["finished"] and shared.epochs == 4
    for s in STATS:
        np.testing.assert_array_equal(shared.stat(s), single.stat(s), err_msg=s)  # identical to one run alone
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # lock released, no temps


@pytest.mark.slow
def test_waiter_takes_over_a_killed_holders_run_and_resumes(tmp_path):
    from harness.dynamics import STATS, Dynamics

    out, _, res_b = _two_recorders(tmp_path, kill_holder=True)
    assert res_b == {"trained": [3, 4], "epochs": 4}  # the dead holder's 2 epochs kept, not redone
    shared, single = Dynamics.open(out), _reference(4)
    for s in STATS:
        np.testing.assert_allclose(shared.stat(s), single.stat(s), rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=s)
    assert not (out / ".lock").exists()


# --- condensed-set artifacts of table cells -----------------------------------------------------------
class _Log(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("holder_finishes", [True, False])
def test_condensed_artifact_is_made_once(tmp_path, monkeypatch, holder_finishes):
    """A cell whose condensed set another process is making waits; it reuses that set, or makes it
    itself when the maker dies without one."""
    import adapters.condense
    from condensed import CondensedSet, load_condensed
    from harness.bench.kinds import RunContext
    from harness.bench.kinds.base import CellConfig
    from harness.bench.kinds.condense import condensed_set

    art = tmp_path / "art"

    class Ctx(RunContext):
        def artifact(self, kind, config):
            art.mkdir(exist_ok=True)
            return art

    made = []

    def small(seed: int) -> CondensedSet:
        g = torch.Generator().manual_seed(seed)
        return CondensedSet(images=torch.randn(10, 1, 8, 8, generator=g), labels=torch.arange(10), num_classes=10,
                            dataset="digits", method="DM", space="pixel")

    class Fake:
        def default_config(self, **kw):
            return None

        def condense(self, real, ipc, config, **kw):
            made.append(os.getpid())
            return small(1)

    monkeypatch.setattr(adapters.condense, "create_condenser", lambda name: Fake())
    log = logging.getLogger(f"test.condensed.{holder_finishes}")
    handler = _Log()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        art.mkdir()
        (art / ".lock").write_text(json.dumps({"pid": holder.pid, "host": HOST}))
        got = {}
        t = threading.Thread(target=lambda: got.setdefault(
            "cs", condensed_set(CellConfig("digits", "dm"), Ctx(log=log), "DM", 1, {}, 0)))
        t.start()
        _until(lambda: any("waiting for" in m for m in handler.lines), "the cell to wait for the artifact")
        assert t.is_alive() and not made
        if holder_finishes:
            small(0).save(art / "set")
            (art / ".lock").unlink()
        holder.kill()
        holder.wait()
        t.join(timeout=120)
        assert not t.is_alive()
    finally:
        holder.kill()
        holder.wait()
    expect = small(0) if holder_finishes else small(1)
    assert got["cs"].checksum() == expect.checksum() == load_condensed(art / "set").checksum()
    assert made == ([] if holder_finishes else [os.getpid()])  # made exactly once, by whoever held the lock
    assert not (art / ".lock").exists()


# --- table runners and `table status` -----------------------------------------------------------------
TABLE = """\
name: conc
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


def test_status_and_runner_tell_live_locks_from_dead_ones(tmp_path, capsys):
    spec_path = tmp_path / "t.yaml"
    spec_path.write_text(TABLE)
    spec = parse_spec(TABLE, str(spec_path))
    (unit,) = table_units(spec, "full")
    res = tmp_path / "res"
    store = ResultStore(res)
    lock = store.lock_path(unit.key)
    lock.parent.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": store.host}))
    st = table_status(spec, res)
    assert (st.done, st.running, st.pending, st.stale) == (0, 0, 1, 1)  # a dead pid claims nothing
    assert main(["table", "status", str(spec_path), "--results", str(res)]) == 0
    assert "0 claimed, 1 pending (1 of them locked by a dead process" in capsys.readouterr().out

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": store.host}))
        st = table_status(spec, res)
        assert (st.running, st.pending, st.stale) == (1, 0, 0)
        rc = main(["table", "run", str(spec_path), "--results", str(res), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 3 and "1 runs (1 cells) still running elsewhere; the table is not complete" in err
        assert not store.has(spec.name, unit.cell.key, unit.key) and lock.exists()
        # --wait: sleep and retry until the holder is gone, then take the unit over
        rc = main(["table", "run", str(spec_path), "--results", str(res), "--no-progress", "--wait"])
        assert rc == 0, capsys.readouterr().err
        assert holder.poll() is not None  # it only ran once the holder had ended
    finally:
        holder.kill()
        holder.wait()
    assert store.has(spec.name, unit.cell.key, unit.key) and not lock.exists()
    assert table_status(spec, res).done == 1
