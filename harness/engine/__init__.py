"""The training engine: one protocol, one set of registered parts, three trainers.

- :mod:`harness.engine.protocol`: :class:`TrainProtocol` (everything a training run needs) and the named
  presets of each paper (``register_protocol`` / ``list_protocols`` / ``create_protocol``);
- :mod:`harness.engine.options`: :class:`EngineOptions`, how a run executes (path, precision, compile);
- :mod:`harness.engine.losses`: losses (``ce``, ``soft_ce``, ``mse``) and per-sample loss weightings;
- :mod:`harness.engine.schedules`: learning-rate schedules and :class:`ScheduledSGD`, the one optimiser;
- :mod:`harness.engine.trainer`: the sequential trainer (one model, an in-memory tensor set);
- :mod:`harness.engine.ensemble`: K models trained together as one vmapped program;
- :mod:`harness.distributed`: data-parallel training on streamed image folders (torchrun).

Augmentation is registered in :mod:`harness.augment`; all three trainers read the same registries
(losses, schedules, augmentations). The one evaluation entry point is :func:`harness.evaluate.evaluate`.
"""

from harness.engine.options import EngineOptions
from harness.engine.protocol import (
    DC_AUG_DATASETS,
    DIGIT_DATASETS,
    TrainProtocol,
    create_protocol,
    list_protocols,
    register_protocol,
)
from harness.engine.schedules import ScheduledSGD, get_schedule, list_schedules, lr_at, register_schedule
from harness.engine.trainer import Trainer, TrainHook, accuracy, predict, seeded_model

__all__ = ["DC_AUG_DATASETS", "DIGIT_DATASETS", "EngineOptions", "ScheduledSGD", "TrainHook", "TrainProtocol",
           "Trainer", "accuracy", "create_protocol", "get_schedule", "list_protocols", "list_schedules", "lr_at",
           "predict", "register_protocol", "register_schedule", "seeded_model"]
