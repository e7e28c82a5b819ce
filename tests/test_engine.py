"""Issue 13: one training engine. The trainers read one schedule / loss / augmentation registry, ``evaluate`` is
the one evaluation entry point, ``record_dynamics`` the one training-with-the-recorder (coreset flow, shrink,
GoldFromOres), and SSP reads one embedding in both flows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from condensed import CondensedSet
from harness.augment import create_augment, create_stream_augment, list_augments
from harness.data import load_dataset
from harness.dynamics import STATS, DynamicsRecorder, record_dynamics
from harness.engine import EngineOptions
from harness.engine.ensemble import fit_ensemble
from harness.engine.losses import get_loss, list_losses
from harness.engine.protocol import TrainProtocol, create_protocol
from harness.engine.schedules import ScheduledSGD, list_schedules, lr_at
from harness.engine.trainer import Trainer, seeded_model
from harness.errors import ConfigError
from harness.evaluate import evaluate, loss_for, random_per_class
from harness.models import create_model, embed, embeddings
from harness.pruning import coreset
from harness.pruning.goldfromores import LossRun, record_loss_run
from harness.pruning.scores import final_eval
from harness.pruning.select import Budget

MODEL = "convnet_w32"  # depth 3 fits 8x8 digits (8 -> 4 -> 2 -> 1)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


def _build(model: str = MODEL, classes: int = 10):
    return lambda: create_model(model, num_classes=classes, in_chans=1, img_size=8)


def _arrays(dyn) -> dict[str, np.ndarray]:
    return {s: np.array(dyn.stat(s)) for s in STATS}


def _assert_same_dynamics(a, b) -> None:
    for s in STATS:
        np.testing.assert_array_equal(np.array(a.stat(s)), np.array(b.stat(s)), err_msg=s)


# --- options ---------------------------------------------------------------------------------------
def test_engine_options_validate_and_record_themselves():
    assert EngineOptions().as_dict() == {"path": "auto", "precision": "auto", "compile": "auto"}
    for bad in ({"path": "vmap"}, {"precision": "fp16"}, {"compile": "yes"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            EngineOptions(**bad)


# --- one schedule registry -----------------------------------------------------------------------------
def test_schedules_by_hand():
    assert {"constant", "cosine", "multistep", "vico_half"} <= set(list_schedules())
    vico = TrainProtocol("v", epochs=6, extra_epoch=True, lr=0.02)  # 7 epochs; x0.1 after epoch 6 // 2 + 1 = 4
    assert [lr_at(vico, e, 0, 1) for e in range(7)] == [0.02] * 5 + [0.02 * 0.1] * 2
    cos = TrainProtocol("c", schedule="cosine", lr=0.1, eta_min=0.01)
    assert lr_at(cos, 0, 0, 10) == pytest.approx(0.1) and lr_at(cos, 0, 5, 10) == pytest.approx(0.055)
    ms = TrainProtocol("m", epochs=6, schedule="multistep", milestones=(0.5,), gamma=0.2, lr=1.0)
    assert [lr_at(ms, e, 0, 1) for e in range(6)] == [1.0] * 3 + [0.2] * 3
    with pytest.raises(ConfigError, match="schedule"):
        TrainProtocol("x", schedule="linear")


def test_sequential_and_ensemble_step_one_schedule_with_vicos_fresh_optimiser(digits, monkeypatch):
    """Both trainers step ScheduledSGD: the same lr at every step, and VICO's halving builds a fresh optimiser
    (momentum buffers dropped) at the same step in both."""
    calls: dict[int, list[tuple[int, int, float, bool]]] = {}
    begin = ScheduledSGD.begin_step

    def spy(self, epoch, step):
        lr = begin(self, epoch, step)
        calls.setdefault(id(self), []).append((epoch, step, lr, len(self.optimizer.state) == 0))
        return lr

    monkeypatch.setattr(ScheduledSGD, "begin_step", spy)
    train, _ = digits
    x, y = train.normalized()[:96], train.labels[:96]
    p = create_protocol("vico-dc", "digits", model=MODEL, epochs=3, batch_size=32)  # 4 epochs x 3 steps
    Trainer(seeded_model(_build(), 1), p, seed=1).fit(x, y)
    fit_ensemble([seeded_model(_build(), s) for s in (1, 2)], p, [1, 2], x, y)
    seq, ens = calls.values()
    assert seq == ens
    # by hand: lr 0.01 for epochs 0..2, 0.001 in epoch 3; fresh optimisers at the run's first step and after the drop
    assert [lr for _, _, lr, _ in seq] == [0.01] * 9 + [0.01 * 0.1] * 3
    assert [step for _, step, _, fresh in seq if fresh] == [0, 9]


# --- one loss registry -------------------------------------------------------------------------------
def test_losses_by_hand_and_their_per_sample_forms():
    assert set(list_losses()) >= {"ce", "soft_ce", "mse"}
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    ce = [-np.log(np.exp(2) / (np.exp(2) + 1)), -np.log(1 / (1 + np.e))]
    torch.testing.assert_close(get_loss("ce").per_sample(z, y), torch.tensor(ce, dtype=torch.float32))
    t = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    torch.testing.assert_close(get_loss("soft_ce").per_sample(z[1:], t[1:]), get_loss("ce").per_sample(z[1:], y[1:]))
    torch.testing.assert_close(get_loss("mse").per_sample(z, t), torch.tensor([(1.5**2 + 0.25) / 2, (1 + 1) / 2]))
    for name in ("ce", "soft_ce", "mse"):
        target = y if get_loss(name).targets == "hard" else t
        torch.testing.assert_close(get_loss(name).mean(z, target), get_loss(name).per_sample(z, target).mean())


# --- augmentation: in-memory and streamed forms of one name -------------------------------------------------
def test_augmentations_have_in_memory_and_streamed_forms_or_are_refused():
    assert {"none", "crop_flip", "flip", "rrc_flip", "dsa"} <= set(list_augments())
    flip = create_augment(TrainProtocol("f", augment="flip"))
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).view(2, 1, 2, 3)
    out = flip(x, torch.Generator().manual_seed(0), 1)
    assert all(torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2)) for i in range(2))
    with pytest.raises(ConfigError, match="no in-memory form"):
        create_augment(TrainProtocol("r", augment="rrc_flip"))
    with pytest.raises(ConfigError, match="no streamed form"):
        create_stream_augment("dsa")
    view = create_stream_augment("crop_flip")(torch.rand(3, 20, 30), torch.Generator().manual_seed(1), 16)
    assert view.shape == (3, 16, 16)


# --- evaluate: the one entry point ------------------------------------------------------------------------
def test_evaluate_ensemble_path_on_cpu_agrees_with_sequential_without_augmentation(digits):
    """No augmentation: the ensemble sees the sequential runs' inits and batches, so each run ends at (almost) the
    same model (float reassociation of grouped convolutions grows over 155 steps); each run's accuracy agrees to a
    few of the 359 test images, far below the spread between seeds."""
    train, test = digits
    sub = train.subset(random_per_class(train.labels, 5, seed=0))
    p = create_protocol("vico-dc", "digits", model=MODEL, epochs=30, batch_size=10)
    ens = evaluate(sub, test, p, seeds=[7, 8, 9],
                   options=EngineOptions(path="ensemble", precision="fp32", compile=False))
    seq = evaluate(sub, test, p, seeds=[7, 8, 9], options=EngineOptions.exact())
    assert ens.extra["path"] == "ensemble" and seq.extra["path"] == "sequential"
    assert ens.seeds == seq.seeds == (7, 8, 9)
    for a, b in zip(ens.accuracies, seq.accuracies):
        assert abs(a - b) <= 5 / len(test) + 1e-12
    assert min(seq.accuracies) > 0.4  # it learned something (chance 0.1)


# --- record_dynamics: the one training-with-the-recorder ------------------------------------------------
def _reference_run(li, protocol, seed, hooks=()):
    """What shrink's record_runs and GoldFromOres' record_loss_run did before issue 13, written out: the set in
    its input space (ZCA as stored, else normalized), the loss its labels need, a seeded model, the Trainer
    with a recorder."""
    x = li.images.float() if li.space == "zca" else li.normalized()
    proto = loss_for(li, protocol)
    targets = li.soft_labels if proto.loss != "ce" else li.labels
    rec = DynamicsRecorder(len(li), li.num_classes, labels=li.labels.numpy())
    model = seeded_model(lambda: create_model(proto.model, num_classes=li.num_classes, in_chans=li.channels,
                                              img_size=li.size), seed)
    Trainer(model, proto, seed=seed, hooks=[rec, *hooks]).fit(x, targets, labels=li.labels)
    rec.finish()
    return rec.dynamics(), model


def test_record_dynamics_on_a_soft_label_zca_set_is_the_old_shrink_loop(digits):
    """Shrink's sets: ZCA space images trained as stored, soft labels trained with soft CE (statistics on the
    hard labels); bit-identical to the loop shrink used to run."""
    train, _ = digits
    g = torch.Generator().manual_seed(0)
    idx = random_per_class(train.labels, 3, seed=3)
    soft = torch.softmax(torch.randn(len(idx), 10, generator=g) * 3, 1)
    li = CondensedSet(images=torch.randn(len(idx), 1, 8, 8, generator=g), labels=train.labels[idx], num_classes=10,
                      dataset="digits", method="KIP", space="zca", mean=train.mean, std=train.std, soft_labels=soft,
                      zca={"eps": 0.1, "fit": "normalized train"}).to_labeled()
    p = create_protocol("yoco", "digits", model=MODEL, epochs=3, batch_size=8)
    dyn, model = record_dynamics(li, p, seed=4, return_model=True, options=EngineOptions.exact())
    ref, ref_model = _reference_run(li, p, 4)
    _assert_same_dynamics(dyn, ref)
    for (name, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert dyn.meta["config"]["protocol"]["loss"] == "soft_ce"


def test_record_dynamics_cached_run_returns_the_trained_model(tmp_path, digits):
    """The coreset flow's run: on disk, reused when finished; the model comes back from its checkpoint."""
    train, _ = digits
    small = train.subset(torch.arange(200))
    p = create_protocol("ccs", "digits", model=MODEL, epochs=2, batch_size=64)
    dyn, model = record_dynamics(small, p, seed=2, out_dir=tmp_path / "d", return_model=True,
                                 options=EngineOptions.exact())
    again, loaded = record_dynamics(small, p, seed=2, out_dir=tmp_path / "d", return_model=True,
                                    options=EngineOptions.exact(),
                                    progress=lambda e, t: pytest.fail("a finished run must not train"))
    _assert_same_dynamics(dyn, again)
    _assert_same_dynamics(dyn, _reference_run(small, p, 2)[0])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_goldfromores_scoring_run_is_record_dynamics_and_the_old_loop(digits):
    """GoldFromOres' LossRun (model kwargs, eval passes between epochs) through record_dynamics: the same
    dynamics and eval-mode logits as the loop that stopped training at each eval epoch."""
    train, _ = digits
    data = train.subset(torch.arange(300))
    run = LossRun(epochs=3, model_kwargs={"width": 8, "depth": 2})
    res = record_loss_run(data, run, seed=5, eval_after=(1,), options=EngineOptions.exact())
    x, y = data.normalized(), data.labels
    rec = DynamicsRecorder(len(data), 10, labels=y.numpy())
    net = seeded_model(lambda: create_model("convnet", num_classes=10, in_chans=1, img_size=8, width=8, depth=2), 5)
    trainer = Trainer(net, run.protocol(), seed=5, hooks=[rec])
    trainer.fit(x, y, stop_after=1)
    after1 = final_eval(net, x, y)
    trainer.fit(x, y)
    final = final_eval(net, x, y)
    rec.finish()
    _assert_same_dynamics(res.dynamics, rec.dynamics())
    np.testing.assert_array_equal(res.evals[1].logits, after1.logits)
    np.testing.assert_array_equal(res.final.logits, final.logits)


# --- SSP: one embedding in both flows ----------------------------------------------------------------------
def test_ssp_features_are_the_same_representation_in_the_coreset_flow_and_shrink(tmp_path, digits, monkeypatch):
    """Both flows hand k-means ``embeddings(final model of record_dynamics, the set in its input space)``: for
    the ConvNet the flattened features before the classifier (YOCO's ``model.embed``)."""
    import condensed.shrink as shrink_mod

    train, _ = digits
    seen: dict[str, np.ndarray] = {}

    def spy(where, real):
        def select(*a, **kw):
            seen[where] = np.asarray(kw["features"])
            return real(*a, **kw)
        return select

    monkeypatch.setattr(coreset, "select_with_recipe", spy("coreset", coreset.select_with_recipe))
    monkeypatch.setattr(shrink_mod, "select_with_recipe", spy("shrink", shrink_mod.select_with_recipe))
    p = create_protocol("vico-dc", "digits", model=MODEL, epochs=1)
    coreset.run_coreset("digits", "ssp", Budget.keep_fraction(0.5), protocol_dynamics="vico-dc",
                        protocol_train="vico-dc", model=MODEL, epochs_dynamics=1, epochs_train=1, runs=1,
                        workdir=tmp_path, seed=0)
    _, model = record_dynamics(train, p, seed=0, return_model=True)  # in memory, as shrink trains
    np.testing.assert_array_equal(seen["coreset"], embeddings(model, train.normalized()).numpy())
    # shrink on a condensed set whose decoded images are these training images' first 4 per class
    idx = torch.cat([torch.nonzero(train.labels == c).flatten()[:4] for c in range(10)])
    cs = CondensedSet(images=train.subset(idx).pixel_float(), labels=train.labels[idx], num_classes=10,
                      dataset="digits", method="DC", space="pixel", mean=train.mean, std=train.std)
    shrink_mod.shrink(cs, 2, rule="ssp", protocol="vico-dc", epochs=1, seed=0)
    li = cs.decoded().to_labeled()
    _, model = record_dynamics(li, create_protocol("vico-dc", "digits", epochs=1), seed=0, return_model=True)
    np.testing.assert_array_equal(seen["shrink"], embeddings(model, li.normalized()).numpy())
    # the representation: what the classifier reads
    xb = li.normalized()[:5]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(embed(model, xb)), model(xb))
    assert seen["shrink"].shape == (40, model.num_features)
