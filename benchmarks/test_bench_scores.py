"""Benchmark: every score streamed from CIFAR-100-sized on-disk dynamics (50,000 x 200 epochs, 100 classes).

Stats only (no logits), float32 memmaps in a temporary directory. Heavy (~320 MB of files); scale it
down with ``DDBENCH_BENCH_N`` / ``DDBENCH_BENCH_EPOCHS``. Run: ``pytest benchmarks/test_bench_scores.py``.
Peak RSS is printed (resource.getrusage) so memory stays bounded by a few epoch rows.
"""

from __future__ import annotations

import json
import os
import resource
import sys

import numpy as np
import pytest

from harness.dynamics import FORMAT, STATS, VERSION, Dynamics
from harness.pruning.scores import compute_all, list_scores

N = int(os.environ.get("DDBENCH_BENCH_N", 50_000))
EPOCHS = int(os.environ.get("DDBENCH_BENCH_EPOCHS", 200))
CLASSES = 100


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024


@pytest.fixture(scope="module")
def big_dynamics(tmp_path_factory):
    d = tmp_path_factory.mktemp("dyn")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, N)
    np.save(d / "labels.npy", labels)
    for s in STATS:
        mm = np.lib.format.open_memmap(d / f"{s}.npy", mode="w+", dtype=np.float32, shape=(EPOCHS, N))
        for t in range(EPOCHS):
            row = rng.random(N, dtype=np.float32)
            if s == "correct":
                row = (row < min(0.95, 0.1 + t / EPOCHS)).astype(np.float32)
            elif s in ("logit_margin", "prob_margin"):
                row = row * 2 - 1
            mm[t] = row
        mm.flush()
        del mm
    meta = {"format": FORMAT, "version": VERSION, "n": N, "num_classes": CLASSES, "stats": list(STATS),
            "keep_logits": False, "epochs_done": EPOCHS, "capacity": EPOCHS, "finished": True,
            "config": {"synthetic": True}}
    (d / "meta.json").write_text(json.dumps(meta))
    return Dynamics.open(d)


def _anon_mb() -> float:
    """Anonymous (heap) resident memory: what the scorer allocates, not the memmapped file pages it reads
    (those count in RSS when touched but are page cache, reclaimable, and not held by the scorer)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _AnonPeak:
    """Samples RssAnon every 5 ms on a thread; ``peak`` is the highest value seen."""

    def __enter__(self):
        import threading

        self.peak, self._stop = _anon_mb(), threading.Event()

        def watch() -> None:
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, _anon_mb())

        self._t = threading.Thread(target=watch, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def test_all_scores_streamed(benchmark, big_dynamics):
    params = {"tdds": {"T": min(90, EPOCHS), "J": 10}, "dual": {"T": min(30, EPOCHS), "J": 10},
              "lbpe": {"stop_epoch": EPOCHS, "k": 10}}
    before = _anon_mb()
    with _AnonPeak() as mem:
        out = benchmark.pedantic(lambda: compute_all(big_dynamics, list_scores(needs="dynamics"), **params),
                                 rounds=1, iterations=1)
    assert set(out) == set(list_scores(needs="dynamics")) and all(v.shape == (N,) for v in out.values())
    grew = mem.peak - before
    epoch_mb = len(STATS) * N * 4 / 2**20
    benchmark.extra_info.update({"n": N, "epochs": EPOCHS, "anon_before_mb": before, "anon_peak_mb": mem.peak,
                                 "anon_growth_mb": grew, "one_epoch_all_stats_mb": epoch_mb,
                                 "history_mb": epoch_mb * EPOCHS, "peak_rss_mb": _peak_rss_mb()})
    print(f"\nall {len(out)} scores, N={N}, epochs={EPOCHS}: heap grew {grew:.1f} MB during scoring "
          f"(one epoch of all stats = {epoch_mb:.1f} MB, whole history = {epoch_mb * EPOCHS:.0f} MB; "
          f"process peak RSS incl. page cache {_peak_rss_mb():.0f} MB)")
