"""Issue 11 items 4 and 6: iteration budgets (CCS / DUAL ImageNet) and TDDS's score-weighted subset loss.

* ``TrainProtocol(iterations=k)`` runs exactly k optimiser steps through re-shuffled passes, the cosine lr
  reaches ``eta_min`` at step k, and a run stopped between passes resumes bit for bit.
* ``loss_weighting="tdds_score_mean"`` is TDDS's ``loss = CE * sum(s) / n`` with ``s`` the min-max-
  normalised TDDS score: checked against a hand computation and against an independent
  re-implementation of the data path and loss of TDDS's ``data_subset.py`` / ``train_subset.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.engine.ensemble import fit_ensemble
from harness.engine.losses import get_loss_weighting, list_loss_weightings, minmax_weights, tdds_score_mean
from harness.engine.protocol import TrainProtocol, create_protocol
from harness.engine.schedules import lr_at
from harness.engine.trainer import Trainer, seeded_model
from harness.errors import ConfigError
from harness.models import create_model
from harness.pruning.coreset import subset_weights


def _net(seed: int = 0) -> torch.nn.Module:
    return seeded_model(lambda: create_model("convnet_d2", num_classes=4, in_chans=1, img_size=8), seed)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 4


class _Spy:
    """Records, per optimiser step, the batch indices and the lr the step used."""

    def __init__(self) -> None:
        self.idx: list[torch.Tensor] = []
        self.lrs: list[float] = []
        self.epochs: list[int] = []
        self.trainer: Trainer | None = None

    def on_batch(self, epoch, index, logits, labels) -> None:
        self.idx.append(index.clone())
        self.lrs.append(self.trainer.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, epoch, trainer) -> None:
        self.epochs.append(epoch)


def test_iteration_budget_runs_exactly_k_steps_with_cosine_to_eta_min() -> None:
    x, y = _data()  # 20 samples, batch 8: 3 steps per pass; 7 steps = 3 + 3 + 1
    p = TrainProtocol("t", model="convnet_d2", batch_size=8, lr=0.1, schedule="cosine", eta_min=0.001, iterations=7)
    assert (p.steps_per_epoch(20), p.steps_for(20), p.epochs_for(20)) == (3, 7, 3)
    with pytest.raises(ConfigError, match="epochs_for"):
        _ = p.total_epochs  # an iteration budget has no fixed number of epochs
    assert "7 iterations" in p.describe() and "epochs" not in p.describe().split(";")[0]
    spy = _Spy()
    tr = Trainer(_net(), p, seed=5, hooks=[spy])
    spy.trainer = tr
    tr.fit(x, y)
    assert tr.step == 7 and len(spy.idx) == 7 and tr.epoch == 3 and spy.epochs == [0, 1, 2]
    # the lr of step s is the cosine at s / 7 (hand formula), and it reaches eta_min at step 7
    want = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * s / 7)) / 2 for s in range(7)]
    assert spy.lrs == pytest.approx(want, rel=1e-12, abs=0)
    assert lr_at(p, 2, 7, 7) == 0.001
    # repeated passes of fresh permutations from the trainer's generator; the third pass is cut after one batch
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(20, generator=g) for _ in range(3)]
    batches = [perm[s:s + 8] for perm in perms for s in range(0, 20, 8)][:7]
    assert [b.tolist() for b in spy.idx] == [b.tolist() for b in batches]


def test_epoch_protocols_are_unchanged_and_hash_the_same() -> None:
    p = create_protocol("ccs", "cifar10")
    assert (p.iterations, p.loss_weighting, p.total_epochs, p.steps_for(1000), p.epochs_for(1000)) == \
        (None, "none", 200, 4 * 200, 200)
    # fields added for issue 11 are left out of as_dict at their defaults: old cache keys stay valid
    d = p.as_dict()
    assert "iterations" not in d and "loss_weighting" not in d and d["epochs"] == 200
    assert create_protocol("ccs-subset", "cifar10").as_dict()["iterations"] == 40000


def test_multistep_under_an_iteration_budget_counts_steps() -> None:
    p = TrainProtocol("t", schedule="multistep", milestones=(0.5, 0.8), gamma=0.1, lr=1.0, iterations=10)
    lrs = [lr_at(p, 0, s, 10) for s in range(10)]
    assert lrs == pytest.approx([1.0] * 5 + [0.1] * 3 + [0.01] * 2)


@pytest.mark.parametrize("kw,msg", [({"iterations": 0}, "iterations"), ({"iterations": 2.5}, "iterations"),
                                    ({"iterations": 5, "schedule": "vico_half"}, "vico_half"),
                                    ({"loss_weighting": "tdds"}, "loss_weighting"),
                                    ({"loss_weighting": "tdds_score_mean", "loss": "mse"}, "cross-entropy")])
def test_protocol_refuses_bad_budgets_and_weightings(kw, msg) -> None:
    with pytest.raises(ConfigError, match=msg):
        TrainProtocol("t", **kw)


def test_iteration_budget_resumes_bit_identical() -> None:
    x, y = _data()
    p = TrainProtocol("t", model="convnet_d2", batch_size=8, lr=0.05, schedule="cosine", eta_min=1e-4, iterations=8,
                 augment="crop_flip")
    a = _net()
    Trainer(a, p, seed=3).fit(x, y)
    b = _net()
    tb = Trainer(b, p, seed=3)
    tb.fit(x, y, stop_after=2)  # killed after two passes (6 of the 8 steps)
    assert tb.step == 6
    state = tb.state_dict()
    c = _net(seed=99)
    tc = Trainer(c, p, seed=12345)
    tc.load_state_dict(state)
    tc.fit(x, y)
    assert tc.step == 8 and tc.epoch == 3
    for (name, pa), pc in zip(a.named_parameters(), c.parameters()):
        assert torch.equal(pa, pc), name


# --- TDDS's score-weighted loss --------------------------------------------------------------------
def test_tdds_score_mean_by_hand() -> None:
    assert {"none", "tdds_score_mean"} <= set(list_loss_weightings())
    scores = np.array([2.0, 4.0, 6.0, 10.0])  # the whole training set
    w = minmax_weights(scores)
    np.testing.assert_allclose(w, [0.0, 0.25, 0.5, 1.0])
    p = create_protocol("tdds-subset", "cifar10")
    kept = np.array([3, 1])
    np.testing.assert_allclose(subset_weights(p, scores, kept, "tdds"), [1.0, 0.25])
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # CE: ln 2 (target 0), ln 4 (target 1)
    ce = F.cross_entropy(logits, torch.tensor([0, 1]), reduction="none")
    loss = tdds_score_mean(ce, torch.tensor([0.25, 1.0]))
    assert float(loss) == pytest.approx((math.log(2) + math.log(4)) / 2 * (1.25 / 2), rel=1e-6)  # = 0.9375 ln 2
    assert get_loss_weighting("tdds_score_mean").apply is tdds_score_mean
    with pytest.raises(ConfigError, match="equal"):
        minmax_weights(np.ones(4))
    with pytest.raises(ConfigError, match="has none"):
        subset_weights(p, None, kept, "random")
    assert subset_weights(create_protocol("ccs", "cifar10"), scores, kept, "ccs") is None


def _tdds_reference_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, score_full: np.ndarray,
                         prune_rate: float, lr: float) -> np.ndarray:
    """TDDS's subset data path and loss, re-implemented from data_subset.py / train_subset.py (one full batch).

    importance_evaluation.py saves data_mask = argsort(score) and the *sorted* scores; data_subset.py
    min-max normalises the sorted array, gives sample i the entry at its rank (np.where(data_mask == i)),
    keeps data_mask[int(rate * N):]; train_subset.py: loss = criterion(output, y) * sum(s) / n; SGD step.
    """
    data_mask = score_full.argsort()
    sorted_score = np.sort(score_full)
    score = (sorted_score - min(sorted_score)) / (max(sorted_score) - min(sorted_score))
    z = [score[np.where(data_mask == i)] for i in range(len(score_full))]
    subset_mask = data_mask[int(prune_rate * len(data_mask)):]
    s = torch.stack([torch.from_numpy(z[i]) for i in subset_mask])  # default_collate: (B, 1)
    out = model(x[subset_mask])
    n = len(subset_mask)
    loss = F.cross_entropy(out, y[subset_mask]) * sum(s) / n
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for prm in model.parameters():
            prm -= lr * prm.grad
    return subset_mask


def test_tdds_weighting_matches_an_independent_reimplementation_of_their_loop() -> None:
    x, y = _data()
    rng = np.random.default_rng(0)
    score_full = rng.random(20).astype(np.float32) * 3 + 0.5  # TDDS scores of the whole training set
    ref = _net()
    kept = _tdds_reference_step(ref, x, y, score_full, prune_rate=0.4, lr=0.1)
    # ours: the flow's weights (normalised over all 20, rows of the kept 12) and one full-batch SGD step
    p = create_protocol("tdds-subset", "cifar10", model="convnet_d2", batch_size=len(kept), lr=0.1, momentum=0.0,
                     weight_decay=0.0, nesterov=False, schedule="constant", augment="none", iterations=1)
    w = torch.from_numpy(subset_weights(p, score_full, kept, "tdds")).float()
    ours = _net()
    Trainer(ours, p, seed=0).fit(x[kept], y[kept], sample_weights=w)
    plain = _net()
    Trainer(plain, p.with_(loss_weighting="none"), seed=0).fit(x[kept], y[kept])
    moved = 0.0
    for (name, a), b, c in zip(ours.named_parameters(), ref.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)
        moved = max(moved, float((a - c).detach().abs().max()))
    assert moved > 1e-4  # the weighting changed the step (mean weight < 1), so the comparison can fail


def test_trainer_and_ensemble_demand_weights_exactly_when_weighted() -> None:
    x, y = _data()
    p = TrainProtocol("t", model="convnet_d2", batch_size=8, iterations=2, schedule="cosine",
                 loss_weighting="tdds_score_mean")
    with pytest.raises(ConfigError, match="needs sample_weights"):
        Trainer(_net(), p, seed=0).fit(x, y)
    with pytest.raises(ConfigError, match="expected \\(20,\\)"):
        Trainer(_net(), p, seed=0).fit(x, y, sample_weights=torch.ones(19))
    with pytest.raises(ConfigError, match="'none'"):
        Trainer(_net(), p.with_(loss_weighting="none"), seed=0).fit(x, y, sample_weights=torch.ones(20))
    with pytest.raises(ConfigError, match="needs sample_weights"):
        fit_ensemble([_net()], p, [0], x, y)


def test_ensemble_follows_the_budget_and_the_weighting() -> None:
    """No augmentation: the vmapped ensemble and the sequential Trainer take the same batches and steps."""
    x, y = _data()
    w = torch.linspace(0.1, 1.0, 20)
    p = TrainProtocol("t", model="convnet_d2", batch_size=8, lr=0.05, schedule="cosine", eta_min=1e-3, iterations=7,
                 loss_weighting="tdds_score_mean")
    seeds = [4, 9]
    seq = [_net(s) for s in seeds]
    for m, s in zip(seq, seeds):
        Trainer(m, p, seed=s).fit(x, y, sample_weights=w)
    ens = fit_ensemble([_net(s) for s in seeds], p, seeds, x, y, sample_weights=w)
    unweighted = _net(seeds[0])
    Trainer(unweighted, p.with_(loss_weighting="none"), seed=seeds[0]).fit(x, y)
    for a, b in zip(seq, ens):
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=name)
    diff = max(float((pa - pb).detach().abs().max()) for pa, pb in zip(seq[0].parameters(), unweighted.parameters()))
    assert diff > 1e-4


def test_an_epochs_override_never_silently_loses_to_an_iteration_budget() -> None:
    from harness.bench.cells import resolve_protocol
    from harness.pruning.coreset import resolve_flow

    with pytest.raises(ConfigError, match="would be ignored"):
        resolve_protocol({"protocol": "ccs-subset", "dataset": "cifar10", "protocol_overrides": {"epochs": 3}})
    p = resolve_protocol({"protocol": "ccs-subset", "dataset": "cifar10",
                          "protocol_overrides": {"epochs": 3, "iterations": None}})
    assert (p.iterations, p.total_epochs) == (None, 3)
    _, _, p = resolve_flow("cifar10", "ccs", "ccs", "ccs-subset", epochs_train=4)  # the CLI's --epochs-train
    assert (p.iterations, p.total_epochs) == (None, 4)
    with pytest.raises(ConfigError, match="would be ignored"):
        resolve_flow("cifar10", "ccs", "ccs", "ccs-subset", train_overrides={"epochs": 4})
