"""TrainProtocol presets against the reference hyper-parameters, the training loop, and evaluation."""

from __future__ import annotations

import pytest
import torch

from harness.data import LabeledImages, load_dataset
from harness.engine.protocol import TrainProtocol, create_protocol, list_protocols
from harness.engine.trainer import Trainer, seeded_model
from harness.errors import ConfigError
from harness.evaluate import evaluate, random_per_class
from harness.models import create_model


def test_presets_match_the_references() -> None:
    dc_mnist, dc_cifar = create_protocol("vico-dc", "mnist"), create_protocol("vico-dc", "cifar10")
    assert (dc_mnist.total_epochs, dc_mnist.augment, dc_mnist.dc_strategy) == (1001, "dc", "crop_scale_rotate")
    assert (dc_cifar.total_epochs, dc_cifar.augment) == (301, "none")
    for p in (dc_mnist, create_protocol("vico-dsa", "cifar10"), create_protocol("dm", "cifar10")):
        assert (p.lr, p.momentum, p.weight_decay, p.batch_size, p.schedule) == (0.01, 0.9, 5e-4, 256, "vico_half")
    assert create_protocol("vico-dsa", "cifar10").dsa_strategy == "color_crop_cutout_flip_scale_rotate"
    assert create_protocol("vico-dsa", "mnist").dsa_strategy == "color_crop_cutout_scale_rotate"
    y = create_protocol("yoco", "cifar10")
    assert (y.epochs, y.batch_size, y.milestones, y.gamma, y.cutmix_p) == (1000, 64, (2 / 3, 5 / 6), 0.2, 0.5)
    assert y.dsa_strategy == "color_crop_flip_scale_rotate"
    c = create_protocol("ccs", "cifar10")
    assert (c.model, c.epochs, c.batch_size, c.lr, c.nesterov, c.schedule, c.augment) == \
        ("resnet18_cifar", 200, 256, 0.1, True, "cosine", "crop_flip")
    assert create_protocol("tdds", "cifar10").batch_size == 100 and create_protocol("dual", "cifar10").batch_size == 128
    assert {"vico-dc", "vico-dsa", "dm", "idc", "yoco", "ccs", "tdds", "dual"} <= set(list_protocols())
    # pruned-subset training as the papers ran it (pruning-scores.md §4; issue 11 items 4-6)
    cs = create_protocol("ccs-subset", "cifar10")  # CCS README: train.py --iterations 40000, bs 256, eta_min 1e-4
    assert (cs.iterations, cs.batch_size, cs.eta_min, cs.nesterov) == (40000, 256, 1e-4, True)
    ts = create_protocol("tdds-subset", "cifar10")  # TDDS README: train_subset.py --epochs 200 --batch-size 128
    assert (ts.iterations, ts.total_epochs, ts.batch_size, ts.eta_min, ts.loss_weighting) == \
        (None, 200, 128, 0.0, "tdds_score_mean")
    ci, cis = create_protocol("ccs-imagenet", "imagenet"), create_protocol("ccs-imagenet-subset", "imagenet")
    assert (ci.model, ci.total_epochs, ci.batch_size, ci.nesterov, ci.weight_decay, ci.eta_min) == \
        ("resnet34", 60, 256, False, 1e-4, 1e-4)  # CCS train_imagenet.py (SGD without nesterov, line 177)
    assert cis.iterations == 300000 and cis.with_(iterations=None) == ci.with_(name="ccs-imagenet-subset")


def test_protocol_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="schedule"):
        TrainProtocol("x", schedule="linear")
    with pytest.raises(ConfigError, match="unknown keys"):
        create_protocol("vico-dc", "mnist", learning_rate=0.1)
    with pytest.raises(KeyError, match="vico-dc"):
        create_protocol("vico_dc")


def _tiny(seed: int = 0, **proto_kw):
    torch.manual_seed(0)
    x, y = torch.randn(20, 1, 8, 8), torch.arange(20) % 4
    proto = TrainProtocol("t", model="convnet_d2", epochs=4, extra_epoch=True, batch_size=8, **proto_kw)
    model = seeded_model(lambda: create_model("convnet_d2", num_classes=4, in_chans=1, img_size=8), seed)
    return model, proto, x, y


def test_vico_schedule_drops_lr_after_half_with_fresh_optimizer() -> None:
    model, proto, x, y = _tiny()
    seen = []

    class Spy:
        def on_batch(self, *a) -> None: ...

        def on_epoch_end(self, epoch: int, trainer: Trainer) -> None:
            seen.append((epoch, trainer.optimizer.param_groups[0]["lr"]))

    Trainer(model, proto, seed=0, hooks=[Spy()]).fit(x, y)
    # epochs 0..4 (epochs + 1); the drop happens after epoch epochs // 2 + 1 = 3
    assert [round(lr, 6) for _, lr in seen] == [0.01, 0.01, 0.01, 0.001, 0.001]


def test_training_is_deterministic_and_resumable() -> None:
    model_a, proto, x, y = _tiny(augment="dsa", dsa_strategy="color_crop_scale_rotate")
    Trainer(model_a, proto, seed=3).fit(x, y)
    model_b, *_ = _tiny(augment="dsa", dsa_strategy="color_crop_scale_rotate")
    tb = Trainer(model_b, proto, seed=3)
    tb.fit(x, y, stop_after=2)  # as if killed after two epochs; resume from the state in a new trainer
    state = tb.state_dict()
    model_c, *_ = _tiny(seed=99)
    tc = Trainer(model_c, proto, seed=12345)
    tc.load_state_dict(state)
    tc.fit(x, y)
    for pa, pc in zip(model_a.parameters(), model_c.parameters()):
        assert torch.allclose(pa, pc, atol=1e-6)


def test_evaluate_digits_beats_chance_and_reports_runs() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    proto = create_protocol("vico-dc", "digits", model="convnet_d2", epochs=60)
    idx = random_per_class(train.labels, 10, seed=0)
    r = evaluate(train.subset(idx), test, proto, runs=2, seed=5)
    assert len(r.accuracies) == 2 and r.seeds == (5, 6)
    assert r.mean > 0.6  # 10 real digits per class, chance is 0.1
    assert r.protocol["epochs"] == 60 and r.protocol["reported"] == "last"


def test_evaluate_rejects_geometry_mismatch() -> None:
    test = load_dataset("digits", "test")
    bad = LabeledImages(torch.rand(10, 1, 28, 28), torch.arange(10), 10, space="pixel",
                        mean=(0.3,), std=(0.3,), name="wrong-size")
    with pytest.raises(ConfigError, match="wrong-size"):
        evaluate(bad, test, create_protocol("vico-dc", "digits"), runs=1)


def test_soft_labels_use_a_soft_loss() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    idx = random_per_class(train.labels, 2, seed=0)
    sub = train.subset(idx)
    sub.soft_labels = torch.nn.functional.one_hot(sub.labels, 10).float() * 0.9 + 0.01
    r = evaluate(sub, test, create_protocol("vico-dc", "digits", model="convnet_d2", epochs=2), runs=1)
    assert r.protocol["loss"] == "soft_ce"
