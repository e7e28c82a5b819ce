"""ddbench's YOCO selections against an independent re-implementation of YOCO's selection code.

The reference below (``_yoco_*``) was written for this test from reading he-y/you-only-condense-once
(commit 1b81c7e): ``utils/img_loader.py`` 533-602 (score-file branch of ``load_data_path``),
``ccs/core/data/Coreset.py`` (``mislabel_mask``, ``stratified_sampling`` with its ``bin_allocate``),
``argument.py`` 301-423 (switches) and ``generate_importance_score.py`` 74-129 and ``compute_topk``
(LBPE top-K). It follows their steps with torch, in their order:

- CCS (``ccs``): sort by EL2N descending (``mislabel_mask``, in place), drop the first int(r N), 50
  strata on the re-ordered scores, ``bin_allocate`` over ``torch.argsort`` of the populations, and
  ``pool[:budget]`` of each stratum in the re-ordered array; balanced: the same global cut, then each
  class's positions in the re-ordered array (``extract_indices_by_range``) go through the strata alone.
- YOCO: LBPE_top{K} = sum of per-epoch EL2N over the K epochs < stop_epoch with the most correct
  samples (``correct_num[:stop].topk(K)``); sort descending; balanced: the last IPC_T f^2 of each class
  (``score_indices[-k:]``, the lowest LBPE); imbalanced: the last int(IPC_T / IPC_F N) overall.

Scores here are float64 and tie-free. YOCO's pickles hold float32 scores (and its balanced CCS branch
turns them into Python floats and back into a float32 tensor), so on real data the two can differ only
for a sample within float32 rounding of a stratum edge.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from condensed import CondensedSet, load_condensed
from condensed.shrink import LBPE_DEFAULTS, ccs_cutoff, lbpe_choice, lbpe_defaults, shrink
from harness.dynamics import Dynamics
from harness.pruning.recipes import select_with_recipe
from harness.pruning.scores import compute_score
from harness.pruning.select import Budget, bin_allocate, stratified

NC = 10


# --- the reference (independent, torch) -------------------------------------------------------------------
def _yoco_sort_and_cut(score: torch.Tensor, cut: int, descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``mislabel_mask(inplace=True)``: the scores re-ordered by the cut-off sort minus the first ``cut``, and
    the original index of each remaining position."""
    order = torch.argsort(score, descending=descending)
    left = order[cut:]
    return score[left], left


def _yoco_strata(score: torch.Tensor, budget: int, stratas: int = 50) -> list[int]:
    """``stratified_sampling(random_select=False)``: positions picked, stratum by stratum."""
    low = torch.min(score)
    step = (torch.max(score) * 1.0001 - low) / stratas
    masks = [torch.logical_and(score >= low + s * step, score < low + (s + 1) * step) for s in range(stratas)]
    population = torch.tensor([int(m.sum()) for m in masks])
    share = torch.zeros(stratas, dtype=torch.long)
    rest = budget
    for i, s in enumerate(torch.argsort(population).tolist()):  # YOCO's bin_allocate
        share[s] = min(int(population[s]), rest // (stratas - i))
        rest -= int(share[s])
    where = torch.arange(score.numel())
    picks: list[int] = []
    for s in range(stratas):
        picks += where[masks[s]][: int(share[s])].tolist()
    return picks


def _class_positions(index: torch.Tensor, start: int, stop: int) -> list[int]:
    """``extract_indices_by_range``: positions of ``index`` whose original index lies in [start, stop)."""
    return [p for p, v in enumerate(index.tolist()) if start <= v < stop]


def _yoco_ccs(score, ipc_from: int, ipc_to: int, per_ipc: int, ratio: float, balance: bool,
              descending: bool = True) -> list[int]:
    score = torch.as_tensor(np.asarray(score), dtype=torch.float64)
    n = score.numel()
    kept_scores, index = _yoco_sort_and_cut(score, int(ratio * n), descending)
    if not balance:
        return index[_yoco_strata(kept_scores, int(ipc_to / ipc_from * n))].tolist()
    size = ipc_from * per_ipc
    out: list[int] = []
    for start in range(0, n, size):
        pos = _class_positions(index, start, start + size)
        want = int(ipc_to / ipc_from * size)
        got = index[pos][_yoco_strata(kept_scores[pos], want)].tolist()
        assert len(got) == want  # YOCO stacks the per-class lists with torch.tensor: they must be equal
        out += got
    return out


def _yoco_lbpe(el2n: np.ndarray, correct: np.ndarray, stop: int, k: int) -> torch.Tensor:
    correct_num = torch.as_tensor(correct).sum(1).to(torch.int32)
    top = correct_num[:stop].topk(k)[1].tolist()
    rows = torch.as_tensor(el2n, dtype=torch.float64)
    score = rows[top[0]].clone()
    for e in top[1:]:
        score += rows[e]
    return score


def _yoco_rank_easy(score: torch.Tensor, ipc_from: int, ipc_to: int, per_ipc: int, balance: bool) -> list[int]:
    _, index = _yoco_sort_and_cut(score, 0, True)  # descending, nothing cut
    n = score.numel()
    if not balance:
        return index[-int(ipc_to / ipc_from * n):].tolist()
    size = ipc_from * per_ipc
    out: list[int] = []
    for start in range(0, n, size):
        out += index[_class_positions(index, start, start + size)][-ipc_to * per_ipc:].tolist()
    return out


def _el2n_window(el2n: np.ndarray, end: int = 10) -> np.ndarray:
    acc = np.zeros(el2n.shape[1])
    for e in range(end):
        acc += el2n[e].astype(np.float64)
    return acc


# --- fixtures ----------------------------------------------------------------------------------------------
def _scores(seed: int, n: int) -> np.ndarray:
    s = np.random.default_rng(seed).uniform(0.05, 3.0, size=n)
    assert np.unique(s).size == n
    return s


def _labels(per_class: int) -> np.ndarray:
    return np.repeat(np.arange(NC), per_class)


def _source(method: str, factor: int, ipc: int = 10) -> CondensedSet:
    g = torch.Generator().manual_seed(0)
    return CondensedSet(images=torch.rand(ipc * NC, 1, 8, 8, generator=g), num_classes=NC, dataset="cifar10",
                        labels=torch.arange(NC).repeat_interleave(ipc), method=method, space="pixel",
                        mean=(0.5,), std=(0.25,), factor=factor)


def _dynamics(labels: np.ndarray, seed: int, epochs: int = 100) -> tuple[Dynamics, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = labels.size
    el2n = rng.uniform(0.0, 1.4, size=(epochs, n)).astype(np.float32)
    counts = rng.permutation(n + 1)[:epochs]  # distinct numbers of correct samples per epoch: no ties in top-K
    correct = np.zeros((epochs, n), np.float32)
    for e, c in enumerate(counts):
        correct[e, rng.permutation(n)[:c]] = 1
    return Dynamics.from_arrays(labels, NC, el2n=el2n, correct=correct), el2n, correct


# --- hand-computed -----------------------------------------------------------------------------------------
def test_ccs_yoco_hand_computed_takes_the_highest_el2n_in_each_stratum():
    # idx:     0     1     2     3  |  4     5     6     7
    s = np.array([0.50, 0.10, 0.40, 0.20, 0.90, 0.30, 0.80, 0.60])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # cut int(0.25 * 8) = 2 highest: 4, 6. Left, high to low: 7 .6, 0 .5, 2 .4, 5 .3, 3 .2, 1 .1.
    # 2 strata over [0.1, 0.60006], step 0.25003: {5, 3, 1} {7, 0, 2}; 4 kept: 2 each (bin_allocate).
    # YOCO takes each stratum's first two in that order: 5, 3 | 7, 0 (index order would give 1, 3 | 0, 2,
    # all four from class 0)
    kept = select_with_recipe("ccs_yoco", s, y, Budget.count(4), seed=0, cutoff_ratio=0.25, strata=2)
    np.testing.assert_array_equal(kept, [0, 3, 5, 7])
    # balanced (same global cut): class 0 left 0 .5, 2 .4, 3 .2, 1 .1 over [0.1, 0.50005]: {3, 1} {0, 2} -> 3, 0;
    # class 1 left 7, 5 -> both
    kept = select_with_recipe("ccs_yoco_balance", s, y, Budget.ipc(2), seed=0, cutoff_ratio=0.25, strata=2)
    np.testing.assert_array_equal(kept, [0, 3, 5, 7])
    # the same with AUM read low = hard (YOCO's accumulated_margin branch: ascending sort): cut 1, 3; left, low
    # to high: 5 .3, 2 .4, 0 .5, 7 .6, 6 .8, 4 .9 over [0.3, 0.90009], step 0.300045: {5, 2, 0, 7} {6, 4};
    # ascending population: {6, 4} takes min(2, 4 // 2) = 2, the other 2 -> 5, 2 (the lowest AUM first)
    kept = stratified(s, y, Budget.count(4), seed=0, direction="low_hard", cutoff_ratio=0.25, strata=2,
                      within="hard_first")
    np.testing.assert_array_equal(kept, [2, 4, 5, 6])


def test_yoco_hand_computed_lbpe_top_k():
    # 4 epochs, 4 samples (2 classes): correct counts 1, 3, 0, 2 -> top-2 epochs of the first 3: 1 and 0
    el2n = np.array([[0.1, 0.9, 0.5, 0.2], [0.4, 0.1, 0.3, 0.8], [9, 9, 9, 9], [9, 0, 0, 9]], np.float32)
    correct = np.array([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]], np.float32)
    d = Dynamics.from_arrays(np.array([0, 0, 1, 1]), 2, el2n=el2n, correct=correct)
    # LBPE = 0.5, 1.0, 0.8, 1.0 -> per class the lowest: 0 | 2 (epoch 3, with 2 correct, is past stop_epoch 3)
    lbpe = compute_score("lbpe", d, stop_epoch=3, k=2)
    np.testing.assert_allclose(lbpe, [0.5, 1.0, 0.8, 1.0], rtol=1e-6)
    kept = select_with_recipe("yoco", lbpe, d.labels, Budget.ipc(1), seed=0)
    np.testing.assert_array_equal(kept, [0, 2])
    np.testing.assert_allclose(_yoco_lbpe(el2n, correct, 3, 2).numpy(), lbpe, rtol=1e-12)


# --- against the reference, score level ----------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1, 2])
@pytest.mark.parametrize("ipc_to", [1, 2, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ccs_yoco_matches_yoco(seed: int, ipc_to: int, factor: int):
    per_ipc = factor ** 2
    y = _labels(10 * per_ipc)
    s = _scores(100 * seed + 10 * ipc_to + factor, y.size)
    ratio = ccs_cutoff("cifar10", 10, ipc_to)
    imb = select_with_recipe("ccs_yoco", s, y, Budget.count(int(ipc_to / 10 * y.size)), seed=0, cutoff_ratio=ratio)
    assert imb.tolist() == sorted(_yoco_ccs(s, 10, ipc_to, per_ipc, ratio, False))
    bal = select_with_recipe("ccs_yoco_balance", s, y, Budget.ipc(ipc_to * per_ipc), seed=0, cutoff_ratio=ratio)
    assert bal.tolist() == sorted(_yoco_ccs(s, 10, ipc_to, per_ipc, ratio, True))
    assert np.bincount(y[bal], minlength=NC).tolist() == [ipc_to * per_ipc] * NC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ccs_on_aum_matches_yoco_ascending_branch(seed: int):
    # YOCO with --pruning_key accumulated_margin --stratified_sampling: is_descending = False
    y = _labels(40)
    s = _scores(seed + 50, y.size)
    for ratio, k in ((0.3, 40), (0.1, 80), (0.0, 200)):
        kept = stratified(s, y, Budget.count(k), seed=0, direction="low_hard", cutoff_ratio=ratio,
                          within="hard_first")
        ref = _yoco_ccs(s, 10, k // 40, 4, ratio, False, descending=False)
        assert kept.tolist() == sorted(ref)


def test_torch_tie_order_matters_and_is_followed():
    # 50 strata, most of them of population 0 or 1: which size-1 strata get a pick is decided by the order
    # torch.argsort gives equal populations (CCS/YOCO's bin_allocate); a stable order picks others
    sizes = np.random.default_rng(3).integers(0, 3, size=50)
    ref = torch.zeros(50, dtype=torch.long)
    rest = 20
    for i, s in enumerate(torch.argsort(torch.as_tensor(sizes)).tolist()):
        ref[s] = min(int(sizes[s]), rest // (50 - i))
        rest -= int(ref[s])
    np.testing.assert_array_equal(bin_allocate(20, sizes), ref.numpy())
    assert not np.array_equal(bin_allocate(20, sizes, ties="stable"), ref.numpy())
    assert bin_allocate(20, sizes, ties="stable").sum() == 20


# --- against the reference, through shrink with recorded dynamics ---------------------------------------------
@pytest.mark.parametrize("method,factor", [("IDC", 2), ("MTT", 1)])
@pytest.mark.parametrize("ipc_to", [1, 2, 5])
def test_shrink_matches_yoco(method: str, factor: int, ipc_to: int):
    cs = _source(method, factor)
    labels = cs.decoded().labels.numpy()
    per_ipc = factor ** 2
    assert labels.tolist() == _labels(10 * per_ipc).tolist()  # decoded sets are class-contiguous
    dyn, el2n, correct = _dynamics(labels, seed=7 * ipc_to + factor)
    stop, k = lbpe_defaults(method, "cifar10")
    lbpe = _yoco_lbpe(el2n, correct, stop, k)
    for rule, balance in (("yoco", True), ("yoco_imbalance", False)):
        small = shrink(cs, ipc_to, rule=rule, dynamics=[dyn])
        ref = _yoco_rank_easy(lbpe, 10, ipc_to, per_ipc, balance)
        assert small.provenance["kept_indices"] == sorted(ref), rule
        assert small.ipc == ipc_to and small.provenance["params"]["topk"] == k
    ratio = ccs_cutoff("cifar10", 10, ipc_to)
    e = _el2n_window(el2n)
    for rule, balance in (("ccs", False), ("ccs_balance", True)):
        small = shrink(cs, ipc_to, rule=rule, dynamics=[dyn])
        assert small.provenance["params"]["ccs_cutoff"] == ratio
        assert small.provenance["params"]["ccs_within"] == "hard_first"
        assert small.provenance["kept_indices"] == sorted(_yoco_ccs(e, 10, ipc_to, per_ipc, ratio, balance)), rule
        torch.testing.assert_close(small.images, cs.decoded().images[small.provenance["kept_indices"]])
    # YOCO's --strata_fixed_select (uniform inside strata) is an explicit option
    rnd = shrink(cs, ipc_to, rule="ccs", dynamics=[dyn], strata_random=True)
    assert rnd.provenance["params"]["ccs_within"] == "random" and len(rnd.labels) == int(ipc_to / 10 * labels.size)


# --- LBPE (stop_epoch, K) per source method ----------------------------------------------------------------
def test_lbpe_defaults_are_yocos_and_say_where_they_come_from():
    # generate_importance_score.py 74-129 (the script that computes LBPE_top{K}); DSA: 100 there, not
    # argument.py's 10, which only names the score file it loads
    assert LBPE_DEFAULTS == {
        ("IDC", "cifar10"): (100, 10), ("IDC", "cifar100"): (200, 10), ("IDC", "imagenet"): (200, 10),
        ("DREAM", "cifar10"): (200, 10), ("DREAM", "cifar100"): (200, 10),
        ("MTT", "cifar10"): (10, 3), ("KIP", "cifar10"): (50, 3), ("DSA", "cifar10"): (100, 3),
    }
    for method, dataset in LBPE_DEFAULTS:
        stop, k, source = lbpe_choice(method, dataset)
        assert (stop, k) == LBPE_DEFAULTS[(method, dataset)] and source.startswith("YOCO generate_importance_score")
    assert lbpe_choice("idc", "cifar10-jpeg75")[:2] == (100, 10)  # a CIFAR-10 copy is CIFAR-10
    assert lbpe_choice("IDC", "imagenette")[2].startswith("YOCO")
    for method in ("DC", "DM"):
        stop, k, source = lbpe_choice(method, "cifar10")
        assert (stop, k) == (100, 10) and source.startswith("ddbench default") and method in source
    assert lbpe_choice("IDC", "svhn")[2].startswith("ddbench default")
    assert lbpe_choice("GLaD", "cifar10")[2].startswith("ddbench default")


def test_shrink_records_lbpe_source():
    for method, expect, k in (("MTT", "YOCO generate_importance_score.py", 3), ("DM", "ddbench default", 10)):
        cs = _source(method, 1, ipc=2)
        dyn, _, _ = _dynamics(cs.labels.numpy(), seed=1, epochs=12)
        p = shrink(cs, 1, rule="yoco", dynamics=[dyn]).provenance["params"]
        assert p["lbpe_source"].startswith(expect) and p["topk"] == k
    p = shrink(cs, 1, rule="yoco", dynamics=[dyn], topk=2).provenance["params"]
    assert p["lbpe_source"].startswith("topk given by the caller") and "ddbench default" in p["lbpe_source"]
    assert shrink(cs, 1, rule="yoco", dynamics=[dyn], topk=2, stop_epoch=5).provenance["params"]["lbpe_source"] \
        == "given by the caller"


# --- the recorded IPC of a shrunk set --------------------------------------------------------------------------
def test_shrunk_set_records_the_requested_ipc(tmp_path):
    cs = _source("DSA", 1, ipc=2)
    small = shrink(cs, 1, rule="random", seed=5)
    counts = small.class_counts()
    assert sum(counts) == 10 and max(counts) >= 2  # imbalanced by design: some class keeps both its images
    assert small.ipc == 1 and small.meta()["ipc"] == 1 and small.meta()["class_counts"] == counts
    small.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["ipc"] == 1 and meta["class_counts"] == counts
    back = load_condensed(tmp_path / "s")
    assert back.ipc == 1 and back.ipc_budget == 1 and back.class_counts() == counts
    # an IDC set shrunk to IPC 1 stores 4 decoded images per class, recorded as IPC 1 and shrinkable again
    idc = shrink(_source("IDC", 2, ipc=2), 1, rule="random_balance")
    assert idc.ipc == 1 and idc.class_counts() == [4] * NC and idc.factor == 1
    assert shrink(idc, 1, rule="random_balance").class_counts() == [4] * NC


def test_sets_without_a_budget_keep_the_largest_count(tmp_path):
    cs = CondensedSet(images=torch.rand(5, 1, 4, 4), labels=torch.tensor([0, 0, 1, 2, 2]), num_classes=3,
                      dataset="d", method="m", space="pixel")
    assert cs.ipc == 2 and cs.ipc_budget is None
    cs.save(tmp_path / "a")
    back = load_condensed(tmp_path / "a")
    assert back.ipc == 2 and back.ipc_budget is None
    # a meta.json written before ipc_budget existed (ipc = largest count) loads the same way
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["ipc"] == 2
    from harness.errors import FormatError

    with pytest.raises(FormatError, match="ipc_budget"):
        CondensedSet(images=torch.rand(2, 1, 4, 4), labels=torch.tensor([0, 1]), num_classes=2, dataset="d",
                     method="m", space="pixel", ipc_budget=0)
    meta["ipc"] = "two"
    (tmp_path / "a" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="ipc 'two'"):
        load_condensed(tmp_path / "a")
