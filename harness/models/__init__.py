"""Models: the DD ConvNet family and the DC-paper networks, registered into timm's registry.

``create_model(name, num_classes=..., in_chans=..., img_size=...)`` builds ours or any timm model;
``timm.create_model('convnet', ...)`` works too once :mod:`harness.models` is imported.
"""

from __future__ import annotations

import fnmatch
import sys
from collections.abc import Callable
from functools import partial

import timm
import torch
from timm.models import register_model
from torch import nn

from harness.models.classic import MLP, VGG11, AlexNet, LeNet, ResNet
from harness.models.convnet import CONVNET_VARIANTS, ConvNet
from harness.registry import UnknownNameError, near_matches

_OURS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(ConvNet, **kw) for name, kw in CONVNET_VARIANTS.items()},
    "dc_mlp": MLP,
    "dc_lenet": LeNet,
    "dc_alexnet": AlexNet,
    "dc_alexnet_bn": partial(AlexNet, norm="batchnorm"),
    "dc_vgg11": VGG11,
    "dc_vgg11_bn": partial(VGG11, norm="batchnorm"),
    "dc_resnet18": partial(ResNet, (2, 2, 2, 2)),
    "dc_resnet18_bn": partial(ResNet, (2, 2, 2, 2), norm="batchnorm"),
    "dc_resnet18_bn_ap": partial(ResNet, (2, 2, 2, 2), norm="batchnorm", avgpool=True),
    "resnet18_cifar": partial(ResNet, (2, 2, 2, 2), norm="batchnorm"),
    "resnet34_cifar": partial(ResNet, (3, 4, 6, 3), norm="batchnorm"),
}

# The reference code's names (as they appear in VICO result files) -> ours.
VICO_NAMES = {
    "ConvNet": "convnet", "ConvNetBN": "convnet_bn", "ConvNetLN": "convnet_ln", "ConvNetIN": "convnet_in",
    "ConvNetGN": "convnet_gn", "ConvNetNN": "convnet_nn", "ConvNetD1": "convnet_d1", "ConvNetD2": "convnet_d2",
    "ConvNetD3": "convnet_d3", "ConvNetD4": "convnet_d4", "ConvNetW32": "convnet_w32", "ConvNetW64": "convnet_w64",
    "ConvNetW128": "convnet_w128", "ConvNetW256": "convnet_w256", "ConvNetAS": "convnet_as",
    "ConvNetAR": "convnet_ar", "ConvNetAL": "convnet_al", "ConvNetASwish": "convnet_aswish",
    "ConvNetNP": "convnet_np", "ConvNetMP": "convnet_mp", "ConvNetAP": "convnet_ap",
    "MLP": "dc_mlp", "LeNet": "dc_lenet", "AlexNet": "dc_alexnet", "AlexNetBN": "dc_alexnet_bn",
    "VGG11": "dc_vgg11", "VGG11BN": "dc_vgg11_bn", "ResNet18": "dc_resnet18", "ResNet18BN": "dc_resnet18_bn",
    "ResNet18BN_AP": "dc_resnet18_bn_ap",
}


def _entrypoint(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def fn(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, img_size=32, **kwargs):
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights")
        for k in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(k, None)
        return builder(num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"ddbench model {name!r}."
    return fn


for _name, _builder in _OURS.items():
    setattr(sys.modules[__name__], _name, register_model(_entrypoint(_name, _builder)))


def list_models(pattern: str = "*", *, ours_only: bool = True) -> list[str]:
    if ours_only:
        return sorted(n for n in _OURS if fnmatch.fnmatch(n, pattern))
    return timm.list_models(pattern)


def create_model(name: str, *, num_classes: int, in_chans: int, img_size: int | tuple[int, int],
                 **kwargs) -> nn.Module:
    """Build a model by name: ours (``convnet``, ``dc_resnet18`` ...), a VICO name, or any timm model."""
    name = VICO_NAMES.get(name, name)
    if name in _OURS:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    if name in timm.list_models():
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    near = near_matches(name, list(_OURS) + list(VICO_NAMES))
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise UnknownNameError(f"unknown model {name!r}{hint} (ddbench models: {', '.join(sorted(_OURS))})")


def has_running_stats(model: nn.Module) -> bool:
    """True if the model has BatchNorm-style running statistics (not vmap-safe for ensembles)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's feature embedding, ``(B, D)``: the representation the classifier reads.

    Ours: ``model.embed`` (ConvNet: the flattened features before the classifier, ``width x h x w``, YOCO's
    ``models/convnet.py`` ``embed`` that its SSP / k-means reads in ``generate_importance_score.py``; the
    ResNets: globally average-pooled features). timm models: ``forward_features`` then the head's pooling
    (``forward_head(..., pre_logits=True)``). The coreset flow and shrink both read SSP features here.
    """
    if hasattr(model, "embed"):
        return model.embed(x).flatten(1)
    return model.forward_head(model.forward_features(x), pre_logits=True).flatten(1)


@torch.inference_mode()
def embeddings(model: nn.Module, x: torch.Tensor, *, batch: int = 500) -> torch.Tensor:
    """:func:`embed` of ``x`` (in the model's input space) in eval mode, batched: ``(N, D)`` float32 on the CPU."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([embed(model, x[s:s + batch].to(dev)).float().cpu() for s in range(0, x.shape[0], batch)])


__all__ = ["ConvNet", "VICO_NAMES", "create_model", "embed", "embeddings", "has_running_stats", "list_models"]
