"""Model output shapes for every dataset geometry, the reference parameter counts, timm registration."""

from __future__ import annotations

import pytest
import timm
import torch

from harness.data import get_spec
from harness.errors import ConfigError
from harness.models import VICO_NAMES, create_model, has_running_stats, list_models

GEOMETRIES = {name: get_spec(name) for name in ("mnist", "cifar10", "cifar100", "tinyimagenet", "digits")}
TOO_SMALL = {("digits", m) for m in ("convnet_d4", "convnet_d5", "convnet_d6", "dc_lenet", "dc_vgg11", "dc_vgg11_bn")}
TOO_SMALL |= {(d, "convnet_d6") for d in ("mnist", "cifar10", "cifar100")}


@pytest.mark.parametrize("dataset", sorted(GEOMETRIES))
def test_output_shapes_every_geometry(dataset: str) -> None:
    spec = GEOMETRIES[dataset]
    for name in list_models():
        if (dataset, name) in TOO_SMALL:
            with pytest.raises(ConfigError):
                create_model(name, num_classes=spec.num_classes, in_chans=spec.channels, img_size=spec.size)
            continue
        m = create_model(name, num_classes=spec.num_classes, in_chans=spec.channels, img_size=spec.size).eval()
        with torch.no_grad():
            y = m(torch.randn(2, *spec.geometry))
        assert y.shape == (2, spec.num_classes), (name, dataset)


def test_reference_parameter_counts() -> None:
    def count(**kw) -> int:
        return sum(p.numel() for p in create_model("convnet", **kw).parameters())

    assert count(num_classes=10, in_chans=3, img_size=32) == 320_010
    assert count(num_classes=10, in_chans=1, img_size=28) == 317_706
    assert count(num_classes=100, in_chans=3, img_size=32) == 504_420


def test_convnet_layers_as_reference() -> None:
    m = create_model("convnet", num_classes=10, in_chans=1, img_size=28)
    conv0 = m.features[0]
    assert conv0.padding == (3, 3) and isinstance(m.features[1], torch.nn.GroupNorm)
    assert m.features[1].num_groups == 128 and isinstance(m.features[3], torch.nn.AvgPool2d)
    assert m.embed(torch.zeros(1, 1, 28, 28)).shape == (1, 2048)
    assert create_model("convnet", num_classes=10, in_chans=3, img_size=64).num_features == 8192


def test_timm_registry_and_names() -> None:
    m = timm.create_model("convnet", num_classes=100, in_chans=3, img_size=32)
    assert m.classifier.out_features == 100
    assert "convnet" in timm.list_models("convnet*")
    assert isinstance(create_model("ResNet18", num_classes=10, in_chans=1, img_size=28), torch.nn.Module)
    assert all(v in list_models() for v in VICO_NAMES.values())
    assert has_running_stats(create_model("convnet_bn", num_classes=10, in_chans=3, img_size=32))
    assert not has_running_stats(create_model("convnet", num_classes=10, in_chans=3, img_size=32))
    timm_model = create_model("resnet18", num_classes=7, in_chans=3, img_size=32)  # timm's own
    assert timm_model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(KeyError, match="convnet"):
        create_model("convnett", num_classes=10, in_chans=3, img_size=32)
