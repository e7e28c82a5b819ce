"""Learning-rate schedules, registered once, and the one optimiser every trainer steps.

A :class:`Schedule` gives the learning rate of each optimiser step and says after which epochs the
optimiser is rebuilt (momentum buffers dropped). :class:`ScheduledSGD` is what the sequential
:class:`harness.engine.Trainer`, the vmapped ensemble (:mod:`harness.engine.ensemble`) and the DDP trainer
(:mod:`harness.distributed`) all step, so a protocol's schedule means the same thing in each.

Registered (``TrainProtocol.schedule``):

- ``constant``: ``lr`` throughout.
- ``cosine``: per step, ``eta_min + (lr - eta_min) (1 + cos(pi t / T)) / 2`` for step ``t`` of ``T``
  (``CosineAnnealingLR(T_max=T, eta_min)`` stepped per iteration: CCS ``train.py``, TDDS, DUAL).
- ``multistep``: ``lr * gamma ** #{milestones passed}``, milestones at fractions of the epochs (of the
  steps under an iteration budget; IDC ``train.py``: ``MultiStepLR(milestones=[2/3, 5/6] x epochs, 0.2)``).
- ``vico_half``: VICO ``evaluate_synset`` (``utils.py``): ``epochs + 1`` epochs; after epoch
  ``epochs // 2 + 1`` (0-based) the lr becomes ``lr x 0.1`` **and a fresh optimiser** is built
  (``optimizer = torch.optim.SGD(...)`` again, so momentum buffers are dropped). Defined over epochs only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

import torch

from harness.errors import ConfigError
from harness.registry import Registry


class ScheduleSpec(TypingProtocol):
    """The fields of :class:`harness.engine.protocol.TrainProtocol` a schedule reads (a structural type, so this
    module, which the protocol validates its ``schedule`` against, does not import the protocol)."""

    schedule: str
    lr: float
    eta_min: float
    milestones: tuple[float, ...]
    gamma: float
    epochs: int
    iterations: int | None
    momentum: float
    weight_decay: float
    nesterov: bool

    @property
    def total_epochs(self) -> int: ...


def _never(p: ScheduleSpec, epoch: int) -> bool:
    return False


@dataclass(frozen=True)
class Schedule:
    """``lr(p, epoch, step, steps_total)``: the learning rate of optimiser step ``step`` (0-based, counted over
    the whole run) in epoch ``epoch``; ``restart_after(p, epoch)``: build a fresh optimiser after ``epoch``;
    ``epochs_only``: defined over epochs, so an iteration budget is refused."""

    name: str
    lr: Callable[[ScheduleSpec, int, int, int], float]
    restart_after: Callable[[ScheduleSpec, int], bool] = _never
    epochs_only: bool = False
    doc: str = ""


SCHEDULES: Registry[Schedule] = Registry("schedule")


def register_schedule(s: Schedule) -> Schedule:
    return SCHEDULES.register(s.name, s)


def list_schedules() -> list[str]:
    return SCHEDULES.names()


def get_schedule(name: str) -> Schedule:
    return SCHEDULES.get(name)


def lr_at(p: ScheduleSpec, epoch: int, step: int, steps_total: int) -> float:
    """The learning rate of ``p``'s schedule at optimiser step ``step`` of ``steps_total`` (in ``epoch``)."""
    return get_schedule(p.schedule).lr(p, epoch, step, steps_total)


def _cosine(p: ScheduleSpec, epoch: int, step: int, steps_total: int) -> float:
    return p.eta_min + (p.lr - p.eta_min) * (1 + math.cos(math.pi * step / steps_total)) / 2


def _multistep(p: ScheduleSpec, epoch: int, step: int, steps_total: int) -> float:
    if p.iterations is not None:
        drops = sum(step >= int(round(m * steps_total)) for m in p.milestones)
    else:
        drops = sum(epoch >= int(round(m * p.total_epochs)) for m in p.milestones)
    return p.lr * p.gamma**drops


def _vico_halving_epoch(p: ScheduleSpec) -> int:
    return p.epochs // 2 + 1


def _vico_half(p: ScheduleSpec, epoch: int, step: int, steps_total: int) -> float:
    return p.lr * 0.1 if epoch > _vico_halving_epoch(p) else p.lr


register_schedule(Schedule("constant", lambda p, epoch, step, steps_total: p.lr, doc="lr throughout"))
register_schedule(Schedule("cosine", _cosine, doc="cosine per step to eta_min at the last step"))
register_schedule(Schedule("multistep", _multistep, doc="x gamma at each milestone (fractions of the run)"))
register_schedule(Schedule("vico_half", _vico_half, restart_after=lambda p, e: e == _vico_halving_epoch(p),
                           epochs_only=True,
                           doc="VICO: x0.1 after epoch epochs // 2 + 1 with a fresh optimiser"))


class ScheduledSGD:
    """SGD with the protocol's momentum / weight decay / Nesterov, stepped under its registered schedule.

    Each trainer calls :meth:`begin_step` before every optimiser step (it sets that step's lr) and
    :meth:`end_epoch` after every epoch (it rebuilds the optimiser where the schedule says so). ``params``
    are the tensors to optimise (a stacked ensemble's too: SGD is elementwise). ``foreach`` is passed to SGD.
    ``steps_total``: the run's optimiser steps (the cosine's ``T``); a trainer that learns it from the data
    sets it before the first step. The optimiser starts at ``protocol.lr``; :meth:`begin_step` sets each
    step's value.
    """

    def __init__(self, protocol: ScheduleSpec, params: Iterable[torch.Tensor], steps_total: int | None = None,
                 *, foreach: bool | None = None) -> None:
        self.protocol, self.schedule = protocol, get_schedule(protocol.schedule)
        self.params, self.steps_total, self.foreach = list(params), steps_total, foreach
        self.lr = protocol.lr
        self.optimizer = self._new(self.lr)

    def _new(self, lr: float) -> torch.optim.Optimizer:
        p = self.protocol
        return torch.optim.SGD(self.params, lr=lr, momentum=p.momentum, weight_decay=p.weight_decay,
                               nesterov=p.nesterov and p.momentum > 0, foreach=self.foreach)

    def begin_step(self, epoch: int, step: int) -> float:
        """Set (and return) the learning rate of optimiser step ``step`` in ``epoch``."""
        if self.steps_total is None:
            raise ConfigError("ScheduledSGD: steps_total must be set before the first step")
        lr = self.schedule.lr(self.protocol, epoch, step, self.steps_total)
        if lr != self.lr:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.lr = lr
        return lr

    def end_epoch(self, epoch: int, step: int) -> bool:
        """After ``epoch`` (``step`` optimiser steps done): a fresh optimiser where the schedule restarts."""
        if not self.schedule.restart_after(self.protocol, epoch):
            return False
        self.lr = self.schedule.lr(self.protocol, epoch + 1, step, self.steps_total)
        self.optimizer = self._new(self.lr)
        return True

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved optimiser state (its learning rate included)."""
        self.lr = float(state["param_groups"][0]["lr"])
        self.optimizer = self._new(self.lr)
        self.optimizer.load_state_dict(state)


__all__ = ["SCHEDULES", "Schedule", "ScheduledSGD", "get_schedule", "list_schedules", "lr_at",
           "register_schedule"]
