"""The training engine: one protocol, one set of registered parts, three trainers.

- :mod:`harness.engine.protocol`: :class:`TrainProtocol` (everything a training run needs) and the named
  presets of each paper (``register_protocol`` / ``list_protocols`` / ``create_protocol``);
- :mod:`harness.engine.losses`: losses and per-sample loss weightings;
- :mod:`harness.engine.trainer`: the sequential trainer (one model, an in-memory tensor set);
- :mod:`harness.engine.ensemble`: K models trained together as one vmapped program;
- :mod:`harness.engine.distributed`: data-parallel training on streamed image folders (torchrun).

Augmentation is registered in :mod:`harness.augment`; all three trainers read the same registries.
"""

from harness.engine.protocol import (
    DC_AUG_DATASETS,
    DIGIT_DATASETS,
    TrainProtocol,
    create_protocol,
    list_protocols,
    register_protocol,
)
from harness.engine.trainer import Trainer, TrainHook, accuracy, predict, scheduled_lr, seeded_model

__all__ = ["DC_AUG_DATASETS", "DIGIT_DATASETS", "TrainHook", "TrainProtocol", "Trainer", "accuracy",
           "create_protocol", "list_protocols", "predict", "register_protocol", "scheduled_lr", "seeded_model"]
