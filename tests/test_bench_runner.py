"""Result store, lock contention, a real SIGKILL mid-table and resume, the submitit path, reports."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.bench.cells import expand
from harness.bench.executors import SlurmExecutor
from harness.bench.report import lrs, write_reports
from harness.bench.runner import RunOptions, run_table, table_status, table_units
from harness.bench.spec import parse_spec
from harness.bench.store import ResultStore
from harness.bench.work import cell_jobs

REPO = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
title: tiny digits table
source: test §0
x_label: IPC
defaults:
  dataset: digits
  protocol: vico-dc
  protocol_overrides: {{epochs: {epochs}, batch_size: 64, test_batch: 500}}
  model: convnet_w32
  kind: evaluate
  source: random_real
  runs: {runs}
rows:
  - label: random real
    published: {{"IPC 1": 30.0, "IPC 2": "~40"}}
  - label: full
    source: full
    train_per_class: 10
columns:
  - ipc: 1
  - ipc: 2
  - ipc: 3
"""


def tiny(tmp_path: Path, epochs: int = 1, runs: int = 1) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.format(epochs=epochs, runs=runs))
    return p


def record_files(results: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in (results / "records").rglob("*.json")}


def test_store_atomic_and_write_once(tmp_path):
    store = ResultStore(tmp_path)
    p = store.write("t", "c1", "u1", {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    assert [q.name for q in p.parent.iterdir()] == ["u1.json"]  # no temp file left
    with pytest.raises(FileExistsError):
        store.write("t", "c1", "u1", {"a": 2})
    (p.parent / ".u2.json.abc.tmp").write_text("{half")  # a crashed writer's temp file is no record
    assert list(store.records("t")) == [{"a": 1}]


def test_locks_live_dead_and_foreign(tmp_path):
    store = ResultStore(tmp_path)
    lock = store.claim("u1")
    assert lock is not None and store.claim("u1") is None  # held by a live pid (us)
    lock.release()
    assert not store.lock_path("u1").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.lock_path("u2").write_text(json.dumps({"pid": dead.pid, "host": store.host}))
    again = store.claim("u2")  # stale: a dead pid on this host is reclaimed
    assert again is not None and again.owner["pid"] == os.getpid()
    store.lock_path("u3").write_text(json.dumps({"pid": dead.pid, "host": "elsewhere"}))
    assert store.claim("u3") is None  # another host's lock is never broken automatically
    assert store.break_stale_locks(all_hosts=True) == 1 and store.claim("u3") is not None


def _runner(spec_path: str, results: str, q) -> None:
    import torch

    torch.set_num_threads(1)
    from harness.bench.spec import load_spec

    outs = run_table(load_spec(spec_path), RunOptions(results), progress=False)
    q.put([(o.unit_key, o.status) for o in outs])


def test_two_runners_never_record_a_unit_twice(tmp_path):
    spec_path = tiny(tmp_path)
    results = tmp_path / "res"
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_runner, args=(str(spec_path), str(results), q)) for _ in range(2)]
    for p in procs:
        p.start()
    outs = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    spec = parse_spec(spec_path.read_text(), str(spec_path))
    units = {u.key for u in table_units(spec, "full")}
    done = [k for out in outs for k, s in out if s == "done"]
    assert sorted(done) == sorted(units)  # each unit computed by exactly one runner
    recs = list((results / "records").rglob("*.json"))
    assert sorted(p.stem for p in recs) == sorted(units)
    assert not list((results / "locks").glob("*.lock"))


def _cli() -> list[str]:
    return [sys.executable, "-m", "harness"]


def test_sigkill_mid_table_then_resume(tmp_path):
    spec_path = tiny(tmp_path, epochs=30, runs=1)  # 6 units of ~0.5-1 s each
    results = tmp_path / "res"
    cmd = [*_cli(), "table", "run", str(spec_path), "--results", str(results), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while not list((results / "records").rglob("*.json")) if (results / "records").exists() else True:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no record appeared"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = record_files(results)
    spec = parse_spec(spec_path.read_text(), str(spec_path))
    n_units = len(table_units(spec, "full"))
    assert 1 <= len(before) < n_units, "the kill should land mid-table"
    status = table_status(spec, results)
    assert status.done == len(before)
    out = subprocess.run([*cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{n_units - len(before)} done" in out.stdout  # only the missing units ran
    after = record_files(results)
    assert len(after) == n_units  # nothing lost, nothing duplicated (one file per unit key)
    for name, (ino, data) in before.items():
        assert after[name] == (ino, data), f"{name} was recomputed"
    assert not list((results / "locks").glob("*.lock"))  # the killed runner's stale lock was reclaimed
    rec = json.loads(next(iter(after.values()))[1])
    assert {"config", "protocol", "seed", "accuracies", "timings", "versions", "git_revision"} <= set(rec)


def test_submitit_local_executor(tmp_path):
    spec_path = tiny(tmp_path)
    text = spec_path.read_text().replace("  - ipc: 3\n", "").replace("  - ipc: 2\n", "")
    text = text.replace(', "IPC 2": "~40"', "")
    spec = parse_spec(text.replace("  - label: full\n    source: full\n    train_per_class: 10\n", ""), "s.yaml")
    results = tmp_path / "res"
    jobs = cell_jobs(table_units(spec, "full"))
    outs = list(SlurmExecutor(cluster="local", timeout_min=5).run(jobs, RunOptions(str(results))))
    assert [o.status for o in outs] == ["done"], outs  # one job-array task (each is a fresh process)
    assert len(list((results / "records").rglob("*.json"))) == 1
    assert table_status(spec, results).done == 1


def test_reports_and_fairness_score(tmp_path):
    spec_path = tiny(tmp_path)
    spec = parse_spec(spec_path.read_text(), str(spec_path))
    results = tmp_path / "res"
    # fake records: reports need no training
    store = ResultStore(results)
    for cell in expand(spec, "full"):
        for u in cell.units():
            store.write(spec.name, cell.key, u.key, {"cell": cell.key, "run": u.run, "accuracies": [0.25 + 0.1 * u.run],
                                                    "protocol_text": "vico-dc: test", "timings": {"seconds": 1.0}})
    paths = write_reports(spec, results, tmp_path / "out", "full")
    md = paths["md"].read_text()
    assert "Scale: `full`" in md and "25.00 ± 0.00 / 30.00 → -5.00" in md and "≈40.00" in md
    assert "vico-dc: test" in md
    assert "IPC 1" in paths["csv"].read_text().splitlines()[1]
    assert r"\begin{tabular}" in paths["tex"].read_text()
    assert paths["digits.png"].stat().st_size > 0 and paths["digits.pdf"].stat().st_size > 0
    assert lrs(0.5, 0.3, 0.8, 0.4) == pytest.approx((2.718281828 ** (0.5 * 0.2 - 0.5 * 0.4) - 1 / 2.718281828)
                                                   / (2.718281828 - 1 / 2.718281828), rel=1e-6)
