"""Train K independent models together: one vmapped step for an ensemble of ConvNets (issue 7).

The K models of an evaluation share an architecture and a protocol, so on a GPU they train as one
batched program: ``torch.func.stack_module_state`` stacks their parameters along a leading model
axis, ``vmap(functional_call)`` runs every model's forward in one set of kernels (convolutions
become grouped convolutions), and one ``SGD`` over the stacked tensors updates them all (SGD's
momentum, weight decay and Nesterov terms are elementwise, so SGD on a stack *is* K independent
SGDs with a shared learning rate, which the protocol fixes anyway).

Each model keeps what makes the K runs independent:

- its own initialisation, built by :func:`harness.engine.seeded_model` from its own seed;
- its own data order: a ``torch.Generator`` seeded with the model's seed draws ``randperm(n)`` each
  epoch, exactly as :class:`harness.engine.Trainer` does. With no augmentation and no CutMix the
  Trainer draws nothing else from its generator, so an ensemble member sees the very batches the
  sequential run sees and ends (in fp32) at the same parameters up to float reassociation;
- its own augmentation draws. Augmentation runs on the whole ``(K*B, C, H, W)`` ensemble batch in one
  set of device ops with parameters drawn per sample from one ensemble generator (seeded from all the
  seeds), so each sample's parameters are independent draws from the reference distributions. In DSA
  mode ``S`` (one op group per call) and in IDC's DiffAug (one of crop / scale / rotate per call) the
  op is drawn **per model and per step** (``randint`` of size K), not once for the whole ensemble:
  one shared group would leave each model's marginal distribution unchanged but would correlate the K
  runs and shrink the reported std. Every group is evaluated on
  the full batch and a per-sample ``torch.where`` keeps the chosen one, so the number of random draws
  per step is fixed and nothing is read back to the host. These streams differ from the sequential
  Trainer's (whose draws depend on the chosen group), so with augmentation the two paths agree in
  distribution, not bit for bit.

BatchNorm models (running statistics, batch statistics shared in a way vmap cannot keep per model
without functionalising the buffers) are not ensembled: :func:`can_ensemble` says no and
:func:`harness.evaluate.evaluate` falls back to sequential runs.

The step loop issues no host synchronisation: no ``.item()``, ``float(tensor)`` or ``int(tensor)``;
learning rates are Python floats computed from the step count; accuracies are read once at the end.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from harness.augment import create_augment
from harness.engine.losses import Loss, get_loss
from harness.engine.options import can_ensemble
from harness.engine.protocol import TrainProtocol
from harness.engine.schedules import ScheduledSGD
from harness.engine.trainer import check_sample_weights
from harness.errors import ConfigError

__all__ = ["can_ensemble", "ensemble_accuracy", "ensemble_aug_seed", "ensemble_cutmix", "fit_ensemble"]


def ensemble_aug_seed(seeds: Sequence[int]) -> int:
    """The seed of the ensemble's augmentation generator: a fixed function of all member seeds."""
    h = 1469598103934665603
    for s in seeds:
        h = ((h ^ (int(s) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


# --- CutMix per model, vectorised ---------------------------------------------------------------------
def ensemble_cutmix(x: torch.Tensor, models: int, generator: torch.Generator, p: float, beta: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix with probability ``p`` per model on a ``(K, B, C, H, W)`` batch, all on the device.

    Per model: whether to mix (U < p), lam ~ Beta(beta, beta), a box of side sqrt(1 - lam) centred
    uniformly and clipped, a partner permutation of the model's batch; lam is corrected to the kept
    area (as :func:`harness.augment.cutmix`). Returns (mixed, partner (K, B), lam (K,)); models that do
    not mix get lam 1 and an empty box. ``beta != 1`` draws lam on the CPU from the same generator seed.
    """
    k, b, _, h, w = x.shape
    dev = x.device
    mix = torch.rand(models, generator=generator, device=dev) < p
    if beta == 1.0:
        lam = torch.rand(models, generator=generator, device=dev)
    else:
        seed = torch.randint(2**62, (1,), generator=generator, device=dev)
        cpu = torch.Generator().manual_seed(int(seed.cpu()))  # a host read; beta != 1 is not used by presets
        ga = torch.distributions.Gamma(torch.tensor(beta), torch.tensor(1.0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=cpu)))
            g1, g2 = ga.sample((models,)), ga.sample((models,))
        lam = (g1 / (g1 + g2)).to(dev)
    cut = torch.sqrt(1.0 - lam)
    cw, chh = (w * cut).long(), (h * cut).long()
    cx = torch.randint(w, (models,), generator=generator, device=dev)
    cy = torch.randint(h, (models,), generator=generator, device=dev)
    x1, x2 = (cx - cw // 2).clamp(min=0), (cx + cw // 2).clamp(max=w)
    y1, y2 = (cy - chh // 2).clamp(min=0), (cy + chh // 2).clamp(max=h)
    partner = torch.argsort(torch.rand(k, b, generator=generator, device=dev), dim=1)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    box = ((rows >= y1.view(k, 1, 1)) & (rows < y2.view(k, 1, 1)) & (cols >= x1.view(k, 1, 1))
           & (cols < x2.view(k, 1, 1)) & mix.view(k, 1, 1))  # (K, H, W)
    partner_x = torch.gather(x, 1, partner.view(k, b, 1, 1, 1).expand_as(x))
    mixed = torch.where(box.view(k, 1, 1, h, w), partner_x, x)
    area = ((x2 - x1) * (y2 - y1)).to(x.dtype) / (w * h)
    lam_adj = torch.where(mix, 1.0 - area, torch.ones_like(area))
    return mixed, partner, lam_adj


# --- the loop ------------------------------------------------------------------------------------
def _per_model_loss(loss: Loss, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
                    ) -> torch.Tensor:
    """(K, B, C) logits, (K, B) or (K, B, C) targets -> (K,) losses, each the mean of the registered loss's
    per-sample form over the model's batch (``reduction="none"``: the (K, B) per-sample losses)."""
    k, b, c = logits.shape
    flat = logits.reshape(k * b, c).float()
    t = target.reshape(k * b) if loss.targets == "hard" else target.reshape(k * b, c)
    per = loss.per_sample(flat, t).view(k, b)
    return per if reduction == "none" else per.mean(1)


class _Stack:
    """The stacked parameters of K models and their vmapped forward."""

    def __init__(self, models: Sequence[nn.Module], compile: bool = False) -> None:
        params, buffers = stack_module_state(list(models))
        self.params = params
        self.buffers = buffers
        base = copy.deepcopy(models[0]).to("meta")

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(base, (p, b), (x,))

        fwd = vmap(one, in_dims=(0, 0, 0))
        self.forward = torch.compile(fwd, dynamic=False) if compile else fwd

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(self.params, self.buffers, x)

    def write_back(self, models: Sequence[nn.Module]) -> None:
        with torch.no_grad():
            for k, m in enumerate(models):
                for name, t in m.named_parameters():
                    t.copy_(self.params[name][k])


def fit_ensemble(models: Sequence[nn.Module], protocol: TrainProtocol, seeds: Sequence[int], images: torch.Tensor,
                 targets: torch.Tensor, *, precision: str | None = None, compile: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 sample_weights: torch.Tensor | None = None) -> list[nn.Module]:
    """Train ``models`` (same architecture, own inits) together under ``protocol``; returns them trained.

    ``seeds[k]`` seeds model k's data order (as the sequential Trainer's generator does); augmentation
    and CutMix draw from one ensemble generator seeded by :func:`ensemble_aug_seed`. ``images`` and
    ``targets`` live on the training device (the models' device). The run's length and the loss weighting
    (``sample_weights``, index-aligned with ``images``) follow :meth:`harness.engine.Trainer.fit`.
    """
    if len(models) != len(seeds) or not models:
        raise ConfigError(f"fit_ensemble: {len(models)} models but {len(seeds)} seeds")
    bad = [i for i, m in enumerate(models) if not can_ensemble(m)]
    if bad:
        raise ConfigError(f"fit_ensemble: models {bad} have BatchNorm running statistics; train them sequentially")
    p = protocol
    precision = precision or p.precision
    k = len(models)
    device = next(models[0].parameters()).device
    n = images.shape[0]
    for m in models:
        m.train()
    stack = _Stack(models, compile=compile)
    order_gens = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    aug_gen = torch.Generator(device=device).manual_seed(ensemble_aug_seed(seeds))
    augment = create_augment(p, ensemble=True)  # per-sample parameters, per-model op choices
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    weighting = check_sample_weights(p, sample_weights, n)
    if sample_weights is not None:
        sample_weights = sample_weights.to(device)
    steps_total = p.steps_for(n)
    epochs_total = p.epochs_for(n)
    loss = get_loss(p.loss)
    sgd = ScheduledSGD(p, stack.params.values(), steps_total, foreach=device.type == "cuda" or None)
    step = 0
    for ep in range(epochs_total):
        orders = torch.stack([torch.randperm(n, generator=g, device=device) for g in order_gens])  # (K, n)
        for start in range(0, n, p.batch_size):
            if step >= steps_total:  # an iteration budget ends inside its last pass
                break
            idx = orders[:, start:start + p.batch_size]
            b = idx.shape[1]
            x = images[idx]  # (K, B, C, H, W)
            y = targets[idx]
            x = augment(x.reshape(k * b, *x.shape[2:]), aug_gen, k).view_as(x)
            sgd.begin_step(ep, step)  # a Python float from the step count: no host read
            with autocast:
                red = "mean" if weighting is None else "none"
                if p.cutmix_p > 0:
                    x, partner, lam = ensemble_cutmix(x, k, aug_gen, p.cutmix_p, p.cutmix_beta)
                    logits = stack(x)
                    y2 = torch.gather(y, 1, partner.view(*partner.shape, *([1] * (y.ndim - 2))).expand_as(y))
                    lm = lam if weighting is None else lam.unsqueeze(1)
                    losses = (lm * _per_model_loss(loss, logits, y, red)
                              + (1 - lm) * _per_model_loss(loss, logits, y2, red))
                else:
                    logits = stack(x)
                    losses = _per_model_loss(loss, logits, y, red)
                if weighting is not None:  # (K, B) per-sample losses -> (K,)
                    losses = weighting.apply(losses, sample_weights[idx])
            sgd.zero_grad()
            losses.sum().backward()  # model k's loss depends on model k's slice only
            sgd.step()
            step += 1
        sgd.end_epoch(ep, step)  # e.g. VICO: lr x0.1 with a fresh optimiser, as the sequential Trainer
        if progress is not None:
            progress(ep + 1, epochs_total)
    stack.write_back(models)
    return list(models)


@torch.inference_mode()
def ensemble_accuracy(models: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor, *, batch: int = 1000,
                      precision: str = "fp32") -> list[float]:
    """Final test accuracy of each model, evaluated together (one host read at the end)."""
    for m in models:
        m.eval()
    device = next(models[0].parameters()).device
    stack = _Stack(models)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    correct = torch.zeros(len(models), device=device, dtype=torch.long)
    labels_d = labels.to(device, non_blocking=True)
    with ctx:
        for s in range(0, images.shape[0], batch):
            xb = images[s:s + batch].to(device, non_blocking=True)
            logits = stack(xb.unsqueeze(0).expand(len(models), *xb.shape))
            correct += (logits.argmax(-1) == labels_d[s:s + batch].unsqueeze(0)).sum(1)
    return (correct.double() / images.shape[0]).cpu().tolist()
