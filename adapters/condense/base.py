"""The :class:`Condenser` interface, its registry, configs, checkpoint/resume and progress.

Every condenser optimises a synthetic tensor ``S`` (``ipc`` rows per class, class-major labels)
for ``iterations`` outer iterations. An iteration draws all its randomness (the fresh network,
real batches, DSA parameters) from a generator seeded by ``(seed, iteration)``, so the only state
carried between iterations is ``S`` and the image optimiser's momentum. That state is written to
``checkpoint_dir/checkpoint.pt`` every ``checkpoint_every`` iterations (atomically: temporary file
then rename), and a run restarted with the same inputs continues from its last checkpoint to the
same result as an uninterrupted run.

Iteration count: the reference loops run ``Iteration + 1`` outer iterations (the last one mostly
to evaluate); here ``iterations`` is the number of image-updating outer iterations performed.

Optional periodic evaluation trains fresh models on the current synthetic set and measures them on
a validation split carved (seeded, per class) from the *training* data, never the test split.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import types
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, runtime_checkable
from typing import Protocol as TypingProtocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from condensed import CondensedSet
from harness.data.images import LabeledImages
from harness.engine.host_memory import keep_freed_memory
from harness.engine.options import EngineOptions, bf16_supported, choose_compile, forward_flops
from harness.engine.protocol import DIGIT_DATASETS, create_protocol
from harness.engine.trainer import seeded_model
from harness.errors import ConfigError, FormatError
from harness.evaluate import evaluate
from harness.io import atomic_write_bytes
from harness.models import create_model, has_running_stats
from harness.models import embed as model_embed
from harness.registry import Registry

INITS = ("real", "noise")
FULL_DSA = "color_crop_cutout_flip_scale_rotate"

ProgressFn = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, info)`` after each iteration; ``info`` holds ``loss`` and, when due, ``val_acc``."""


@runtime_checkable
class PrePruner(TypingProtocol):
    """What :meth:`Condenser.condense` needs of a pre-pruning spec (GoldFromOres' ``PrePrune`` implements it).

    Kept as a protocol so the condensers do not import the criteria (the MonteCarlo criterion condenses).
    """

    scores: Any  # None (computed), "authors" or a file: where given scores come from
    drop_fraction: float

    def as_dict(self) -> dict[str, Any]: ...

    def resolve_scores(self, data: LabeledImages) -> tuple[np.ndarray, dict[str, Any]]: ...

    def drop(self, data: LabeledImages, *, scores: np.ndarray | None, scores_info: dict[str, Any] | None,
             cache_dir: str | Path | None, device: torch.device) -> tuple[LabeledImages, torch.Tensor, dict[str, Any]]:
        ...


# --- configs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CondenseConfig:
    """Settings shared by every condenser. Method configs subclass this with their own defaults."""

    iterations: int = 1000
    model: str = "convnet"
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. {"width": 16, "depth": 2}
    init: str = "real"  # real | noise
    lr_img: float = 0.1
    momentum_img: float = 0.5
    batch_real: int = 256
    dsa_strategy: str = ""  # "" = the method's default for the dataset (no flip on digits)
    checkpoint_every: int = 100  # iterations between checkpoints (needs checkpoint_dir)
    eval_every: int = 0  # iterations between validation evaluations; 0 = never
    eval_protocol: str = "vico-dc"
    eval_epochs: int = 50
    eval_runs: int = 1
    val_fraction: float = 0.1  # per class, carved from the training data when eval_every > 0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"iterations must be >= 0, got {self.iterations}")
        if self.init not in INITS:
            raise ConfigError(f"init {self.init!r}: expected one of {INITS}")
        if self.batch_real < 1:
            raise ConfigError(f"batch_real must be >= 1, got {self.batch_real}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")

    def with_(self, **overrides: Any) -> CondenseConfig:
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ConfigError(f"{type(self).__name__}: unknown keys {bad} (known: {sorted(known)})")
        return replace(self, **overrides)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_key(self) -> dict[str, Any]:
        """The settings that decide the synthetic images (not checkpoint/eval bookkeeping)."""
        skip = {"checkpoint_every", "eval_every", "eval_protocol", "eval_epochs", "eval_runs"}
        return {k: v for k, v in self.as_dict().items() if k not in skip}


# --- how a run executes --------------------------------------------------------------------------
@dataclass(frozen=True)
class CondenseEngine:
    """How a condensation run executes (never what it computes), resolved from :class:`EngineOptions`.

    - ``path``: ``batched`` (a condenser that allows it, DM, embeds every class's augmented real batch in one
      forward pass and every class's synthetic images in another: the same per-class means when the model has
      no batch statistics, which is checked) or ``sequential`` (the per-class loop of the authors' scripts).
    - ``precision``: ``bf16`` runs the matching network's forward/backward under bf16 autocast (the loss, the
      gradients of the parameters and the images stay fp32); ``fp32`` plain.
    - ``compile``: ``torch.compile`` the network's forward (DM: the embedding; DC/DSA: the real-batch gradient
      and the inner-loop training; the synthetic branch of gradient matching needs double backward and stays
      eager). One persistent module per run is compiled once; each iteration copies its fresh seeded draw in.

    ``sequential`` + ``fp32`` + eager is :attr:`is_exact`: the same operations as before issue 14, bit for bit.
    """

    options: EngineOptions = field(default_factory=EngineOptions.exact)
    path: str = "sequential"
    precision: str = "fp32"
    compile: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def is_exact(self) -> bool:
        return self.path == "sequential" and self.precision == "fp32" and not self.compile

    @property
    def batched(self) -> bool:
        return self.path == "batched"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on ``device`` when the precision is bf16, else nothing."""
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def key(self) -> dict[str, Any]:
        """What decides the numbers (for checkpoints): path, precision, compile."""
        return {"path": self.path, "precision": self.precision, "compile": self.compile}

    def as_dict(self) -> dict[str, Any]:
        """The record: resolved values (never ``auto``), why, and what was asked for."""
        return {**self.key(), **self.notes, "requested": self.options.as_dict()}


def resolve_engine(options: EngineOptions | None, device: str | torch.device, *, supported: bool = True,
                   batchable: bool = False, run_flops: float | None = None) -> CondenseEngine:
    """The :class:`CondenseEngine` of ``options`` (None: the default, fast one) on ``device``.

    ``precision``: ``auto`` is bf16 where :func:`harness.engine.options.bf16_supported`, else fp32 (the
    condensers' own precision, also what ``None`` keeps); bf16 asked for where it is not native runs fp32 and
    says so. ``compile``: :func:`harness.engine.options.choose_compile` on ``run_flops`` (the expected FLOPs of the
    whole run; None: unknown, ``auto`` stays eager). ``path``: ``sequential`` keeps the per-class loop; ``auto`` and
    ``ensemble`` batch the classes where the condenser can (``batchable``). ``supported=False`` (a condenser that
    has only the fp32 eager loop, e.g. IDC) resolves to the exact engine and says why.
    """
    options = options if options is not None else EngineOptions()
    device = torch.device(device)
    host = keep_freed_memory(device)  # CPU: no page faults per step; numbers unchanged (recorded as host_malloc)
    if not supported:
        why = "this condenser runs fp32, eager, per class only"
        return CondenseEngine(options, notes={"precision_reason": why, "compile_reason": why, "path_reason": why,
                                              **host})
    notes: dict[str, Any] = dict(host)
    native = bf16_supported(device)
    if options.precision == "auto":
        precision = "bf16" if native else "fp32"
        notes["precision_reason"] = (f"auto: native bf16 on {device.type}" if native
                                     else f"auto: no native bf16 on {device.type}; fp32")
    elif options.precision is None:
        precision, notes["precision_reason"] = "fp32", "the condenser's (fp32)"
    else:
        precision, notes["precision_reason"] = options.precision, "requested"
    if precision == "bf16" and not native:
        notes["precision_fallback"] = f"bf16 requested but not native on {device}; ran fp32"
        precision = "fp32"
    comp, cnotes = choose_compile(options, device, precision=precision, train_flops=run_flops)
    notes.update(cnotes)
    if options.path == "sequential":
        path, notes["path_reason"] = "sequential", "requested"
    elif batchable:
        path, notes["path_reason"] = "batched", f"{options.path}: classes batched in one forward pass"
    else:
        path, notes["path_reason"] = "sequential", f"{options.path}: this condenser matches class by class"
    return CondenseEngine(options, path=path, precision=precision, compile=comp, notes=notes)


EXACT_ENGINE = CondenseEngine()


# --- the run context -----------------------------------------------------------------------------
@dataclass
class CondenseContext:
    """What one condensation run works on; built once by :meth:`Condenser.condense`."""

    real: LabeledImages  # the (pruned) real training data, uint8 or float pixels, on the device
    real_x: torch.Tensor  # real images in normalized space, float32, on the device
    class_idx: list[torch.Tensor]  # per-class indices into real_x (on the device)
    ipc: int
    config: CondenseConfig
    dataset: str
    device: torch.device
    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor
    engine: CondenseEngine = EXACT_ENGINE
    _workers: dict[str, Any] = field(default_factory=dict, repr=False)  # the compiled network of the run

    @property
    def num_classes(self) -> int:
        return self.real.num_classes

    @property
    def geometry(self) -> tuple[int, int, int]:
        return (self.real.channels, *self.real.size)

    def build_model(self, seed: int) -> nn.Module:
        c, h, w = self.geometry
        cfg = self.config
        return seeded_model(lambda: create_model(cfg.model, num_classes=self.num_classes, in_chans=c,
                                                 img_size=(h, w), **cfg.model_kwargs), seed).to(self.device)

    def network(self, seed: int, fn: str = "forward", *, fp32_grey_input: bool = False
                ) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        """A fresh network drawn from ``seed`` and the callable running its ``fn`` (``forward`` or ``embed``).

        Eager engine: the fresh module and its own method. Compiling engine: one persistent module per run,
        whose parameters and buffers are overwritten with the fresh draw (the same values), and its ``fn``
        compiled once for the whole run (``dynamic=False``: one graph per batch shape, no dynamic-shape code).
        ``fp32_grey_input``: under bf16, one-input-channel convolutions run fp32 (:func:`fp32_thin_convs`).
        """
        net = self.build_model(seed)
        fp32_convs = fp32_grey_input and self.engine.precision == "bf16"
        if not self.engine.compile:
            if fp32_convs and fp32_thin_convs(net):
                self.engine.notes.setdefault("fp32_layers", FP32_LAYERS_NOTE)
            return net, _method(net, fn)
        worker = self._workers.get("net")
        if worker is None:
            self._workers["net"] = worker = net
            if fp32_convs and fp32_thin_convs(worker):
                self.engine.notes.setdefault("fp32_layers", FP32_LAYERS_NOTE)
        else:
            worker.load_state_dict(net.state_dict())
        if fn not in self._workers:
            self._workers[fn] = torch.compile(_method(worker, fn), dynamic=False)
        return worker, self._workers[fn]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self.engine.autocast(self.device)

    def real_batch(self, c: int, n: int, g: torch.Generator) -> torch.Tensor:
        """``n`` random normalized real images of class ``c`` (all of them if the class is smaller)."""
        idx = self.class_idx[c]
        perm = torch.randperm(idx.numel(), generator=g, device=g.device)[:n].to(idx.device)
        return self.real_x[idx[perm]]

    def dsa_strategy(self, default: str = FULL_DSA) -> str:
        s = self.config.dsa_strategy or default
        return s.replace("_flip", "").replace("flip_", "") if (self.dataset in DIGIT_DATASETS
                                                               and not self.config.dsa_strategy) else s

    def labels(self) -> torch.Tensor:
        return torch.arange(self.num_classes).repeat_interleave(self.ipc)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (``SeedSequence``), e.g. ``(seed, iteration)``."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def new_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def set_bn_eval(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def bn_warmup(net: nn.Module, ctx: CondenseContext, g: torch.Generator, per_class: int = 16) -> None:
    """VICO: forward ``per_class`` real images per class in train mode, then freeze BN statistics."""
    if not has_running_stats(net):
        return
    net.train()
    with torch.no_grad():
        net(torch.cat([ctx.real_batch(c, per_class, g) for c in range(ctx.num_classes)]))
    set_bn_eval(net)


# --- the interface -------------------------------------------------------------------------------
class Condenser(ABC):
    """``condense(real, ipc, config, *, pre_prune=None, seed) -> CondensedSet``.

    Subclasses define ``name``, ``config_cls``, the stored ``space`` and three pieces:
    :meth:`init_synthetic`, :meth:`step` (one outer iteration) and :meth:`probe_loss` (the matching
    loss of a synthetic tensor under one fixed seeded network and real batch, for monitoring).
    """

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[CondenseConfig]] = CondenseConfig
    space: ClassVar[str] = "normalized"
    engine_support: ClassVar[bool] = False  # runs bf16 / compiled when the engine says so (else always exact)
    batchable: ClassVar[bool] = False  # can embed all classes in one forward pass (path "batched")

    # -- hooks for subclasses ------------------------------------------------------------------
    def validate(self, real: LabeledImages, ipc: int, config: CondenseConfig) -> None:
        """Extra method-specific checks (before any work); none by default."""
        return None

    def factor(self, config: CondenseConfig) -> int:
        return 1

    def run_flops(self, ctx: CondenseContext) -> float | None:
        """Expected FLOPs of the whole run (for ``compile="auto"``); None: unknown (then eager)."""
        return None

    def sample_flops(self, ctx: CondenseContext) -> int | None:
        """Forward FLOPs of one image through the configured model (square images; else None)."""
        c, h, w = ctx.geometry
        if h != w:
            return None
        return forward_flops(ctx.config.model, num_classes=ctx.num_classes, in_chans=c, img_size=h,
                             model_kwargs=ctx.config.model_kwargs)

    def context(self, real: LabeledImages, ipc: int, config: CondenseConfig, device: str | torch.device = "cpu",
                engine: EngineOptions | None = None, dataset: str | None = None) -> CondenseContext:
        """The run context of ``real`` with the engine ``engine`` (None: the default, fast one) resolved for this
        condenser: what :meth:`condense` builds, for callers that drive :meth:`step` themselves."""
        device = torch.device(device)
        ctx = make_context(real, ipc, config, dataset or real.name.split(":")[0] or "unknown", device)
        ctx.engine = resolve_engine(engine, device, supported=self.engine_support, batchable=self.batchable,
                                    run_flops=self.run_flops(ctx) if self.engine_support else None)
        return ctx

    @abstractmethod
    def init_synthetic(self, ctx: CondenseContext, g: torch.Generator) -> torch.Tensor: ...

    def optimizer(self, syn: torch.Tensor, ctx: CondenseContext) -> torch.optim.Optimizer:
        return torch.optim.SGD([syn], lr=ctx.config.lr_img, momentum=ctx.config.momentum_img)

    @abstractmethod
    def step(self, ctx: CondenseContext, syn: torch.Tensor, opt: torch.optim.Optimizer, g: torch.Generator,
             seed: int) -> float:
        """One outer iteration; returns the mean matching loss it saw."""

    @abstractmethod
    def probe_loss(self, ctx: CondenseContext, syn: torch.Tensor, seed: int) -> float: ...

    def decoded_pixels(self, ctx: CondenseContext, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The synthetic set as the evaluator sees it: (images in ``self.space``, labels)."""
        return syn.detach(), ctx.labels()

    # -- the driver ----------------------------------------------------------------------------
    def default_config(self, **overrides: Any) -> CondenseConfig:
        return self.config_cls(**overrides)

    def condense(
        self,
        real: LabeledImages,
        ipc: int,
        config: CondenseConfig | None = None,
        *,
        pre_prune: PrePruner | None = None,
        seed: int,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        progress: ProgressFn | None = None,
        score_cache: str | Path | None = None,
        engine: EngineOptions | None = None,
    ) -> CondensedSet:
        """Condense ``real`` to ``ipc`` images per class.

        ``pre_prune``: a :class:`PrePruner` (GoldFromOres: :class:`adapters.condense.goldfromores.PrePrune`)
        applied to the real data first. ``engine``: how the run executes (:class:`CondenseEngine`; None: the
        default fast one, bf16 where native and compiled when the run pays for it; ``EngineOptions.exact()``: the
        fp32 per-class loop, bit for bit the numbers of before issue 14). The resolved engine is in the
        provenance (``engine``) and in the checkpoint's key (a run resumes only under the same engine).
        """
        config = config if config is not None else self.default_config()
        if not isinstance(config, self.config_cls):
            raise ConfigError(f"{self.name} needs a {self.config_cls.__name__}, got {type(config).__name__}")
        if pre_prune is not None and not isinstance(pre_prune, PrePruner):
            raise ConfigError(f"pre_prune must be a PrePrune spec, got {type(pre_prune).__name__}")
        device = torch.device(device)
        dataset = real.name.split(":")[0] or "unknown"
        # ---- checks before any work -------------------------------------------------------
        val_n = self._val_counts(real, config)
        counts = [n - v for n, v in zip(real.class_counts(), val_n)]
        if pre_prune is not None:
            r = pre_prune.drop_fraction
            counts = [n - int(r * n) for n in counts]
        if ipc < 1:
            raise ConfigError(f"ipc must be >= 1, got {ipc}")
        if min(counts) < ipc:
            c = int(np.argmin(counts))
            why = " after pre-pruning" if pre_prune is not None else ""
            why += " and carving the validation split" if config.eval_every else ""
            raise ConfigError(f"ipc {ipc} is larger than class {c}'s {counts[c]} real images{why}")
        check_geometry(real, config, self.factor(config))
        self.validate(real, ipc, config)
        given = None  # released / file scores: index-aligned with the whole of ``real``, read and checked now
        if pre_prune is not None and pre_prune.scores is not None:
            given = pre_prune.resolve_scores(real)
        # ---- data ------------------------------------------------------------------------
        val = None
        train = real
        if config.eval_every:
            tr_idx, va_idx = split_validation(real, config.val_fraction, seed)
            train, val = real.subset(tr_idx), real.subset(va_idx)
            if given is not None:
                given = (given[0][tr_idx.cpu().numpy()], given[1])
        prune_info: dict[str, Any] | None = None
        if pre_prune is not None:
            train, kept, prune_info = pre_prune.drop(train, scores=None if given is None else given[0],
                                                     scores_info=None if given is None else given[1],
                                                     cache_dir=score_cache, device=device)
        ctx = self.context(train, ipc, config, device, engine, dataset)
        # ---- state (fresh or resumed) ------------------------------------------------------
        key = {"method": self.name, "ipc": ipc, "seed": seed, "config": config.run_key(),
               "data": fingerprint(train), "pre_prune": pre_prune.as_dict() if pre_prune else None}
        if not ctx.engine.is_exact:  # exact runs keep the key (and checkpoints) of before issue 14
            key["engine"] = ctx.engine.key()
        key_hash = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
        syn = self.init_synthetic(ctx, new_generator(device, derive_seed(seed, 0xC0DE))).detach().clone()
        syn.requires_grad_(True)
        opt = self.optimizer(syn, ctx)
        start, history = 0, {"loss": [], "val": []}
        if ckpt is not None and ckpt.is_file():
            state = load_checkpoint(ckpt)
            if state.get("key_hash") != key_hash:
                raise ConfigError(f"{ckpt}: the checkpoint belongs to a different run (method, ipc, seed, config "
                                  "or data differ); use another --checkpoint-dir or delete it")
            with torch.no_grad():
                syn.copy_(state["images"].to(device))
            opt.load_state_dict(state["optimizer"])
            start, history = int(state["iteration"]), state["history"]
        total = config.iterations
        for it in range(start, total):
            g = new_generator(device, derive_seed(seed, it))
            loss = self.step(ctx, syn, opt, g, derive_seed(seed, it, 1))
            history["loss"].append(float(loss))
            done = it + 1
            info: dict[str, Any] = {"loss": float(loss), "iteration": done}
            if config.eval_every and (done % config.eval_every == 0 or done == total):
                acc = self._evaluate(ctx, syn, val, seed)
                history["val"].append([done, acc])
                info["val_acc"] = acc
            if ckpt is not None and (done % config.checkpoint_every == 0 or done == total):
                save_checkpoint(ckpt, {"key_hash": key_hash, "key": key, "images": syn.detach().cpu(),
                                       "optimizer": opt.state_dict(), "iteration": done, "history": history})
            if progress is not None:
                progress(done, total, info)
        return self._result(ctx, syn, seed, pre_prune, prune_info, history, len(real))

    # -- helpers -------------------------------------------------------------------------------
    def _val_counts(self, real: LabeledImages, config: CondenseConfig) -> list[int]:
        if not config.eval_every:
            return [0] * real.num_classes
        return [max(1, int(round(config.val_fraction * n))) if n > 1 else 0 for n in real.class_counts()]

    def _evaluate(self, ctx: CondenseContext, syn: torch.Tensor, val: LabeledImages, seed: int) -> float:
        x, y = self.decoded_pixels(ctx, syn)
        cfg = ctx.config
        s = LabeledImages(images=x.cpu(), labels=y, num_classes=ctx.num_classes, space=self.space,
                          mean=ctx.real.mean, std=ctx.real.std, name=f"{self.name}:{ctx.dataset}")
        proto = create_protocol(cfg.eval_protocol, ctx.dataset).with_(epochs=cfg.eval_epochs, model=cfg.model)
        res = evaluate(s, val, proto, runs=cfg.eval_runs, seed=derive_seed(seed, 0xE7A1), device=ctx.device,
                       options=ctx.engine.options)
        return res.mean

    def _result(self, ctx: CondenseContext, syn: torch.Tensor, seed: int, pre_prune: Any,
                prune_info: dict[str, Any] | None, history: dict[str, Any], n_real: int) -> CondensedSet:
        prov = {"method": self.name, "config": ctx.config.as_dict(), "ipc": ctx.ipc, "seed": seed,
                "source": ctx.real.name, "n_real": n_real, "n_real_used": len(ctx.real),
                "pre_prune": pre_prune.as_dict() if pre_prune is not None else None,
                "pre_prune_result": prune_info, "iterations_done": len(history["loss"]),
                "loss_first_last": [history["loss"][0], history["loss"][-1]] if history["loss"] else [],
                "val_history": history["val"], "val_split": "carved from training data" if history["val"] else None,
                "engine": ctx.engine.as_dict()}
        return CondensedSet(images=syn.detach().cpu(), labels=ctx.labels(), num_classes=ctx.num_classes,
                            dataset=ctx.dataset, method=self.name.upper(), space=self.space, mean=ctx.real.mean,
                            std=ctx.real.std, factor=self.factor(ctx.config), provenance=prov)


# --- module-level helpers ------------------------------------------------------------------------
def make_context(train: LabeledImages, ipc: int, config: CondenseConfig, dataset: str,
                 device: torch.device) -> CondenseContext:
    train = train.to(device)
    if not train.mean:
        raise ConfigError(f"{train.name}: real data without mean/std cannot be normalized for condensation")
    mean = torch.tensor(train.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(train.std, device=device).view(1, -1, 1, 1)
    return CondenseContext(real=train, real_x=train.normalized(), class_idx=train.class_indices(), ipc=ipc,
                           config=config, dataset=dataset, device=device, mean=mean, std=std)


def check_geometry(real: LabeledImages, config: CondenseConfig, factor: int = 1) -> None:
    """Build the configured model for the data's geometry and run one forward pass; ConfigError if it fails."""
    c, (h, w) = real.channels, real.size
    try:
        net = create_model(config.model, num_classes=real.num_classes, in_chans=c, img_size=(h, w),
                           **config.model_kwargs)
        with torch.no_grad():
            out = net.eval()(torch.zeros(2, c, h, w))
    except ConfigError as e:
        raise ConfigError(f"model {config.model} {config.model_kwargs} does not fit {real.name} "
                          f"({c}x{h}x{w}): {e}") from None
    except (RuntimeError, ValueError, TypeError, AssertionError) as e:
        raise ConfigError(f"model {config.model} {config.model_kwargs} cannot take {real.name} images "
                          f"({c}x{h}x{w}): {str(e).splitlines()[0]}") from None
    if tuple(out.shape) != (2, real.num_classes):
        raise ConfigError(f"model {config.model} gives outputs {tuple(out.shape)}, expected (2, {real.num_classes})")
    if factor > min(h, w):
        raise ConfigError(f"multi-formation factor {factor} does not fit {h}x{w} images")


def split_validation(real: LabeledImages, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split of the training data into (train, validation) indices, both sorted."""
    g = torch.Generator().manual_seed(derive_seed(seed, 0x7A1))
    tr, va = [], []
    for idx in real.class_indices():
        idx = idx.cpu()
        n_val = max(1, int(round(fraction * idx.numel()))) if idx.numel() > 1 else 0
        perm = idx[torch.randperm(idx.numel(), generator=g)]
        va.append(perm[:n_val])
        tr.append(perm[n_val:])
    return torch.cat(tr).sort().values, torch.cat(va).sort().values


def fingerprint(data: LabeledImages) -> str:
    """sha256 of the images and labels (identifies the real data a checkpoint was made from)."""
    h = hashlib.sha256()
    h.update(str(tuple(data.images.shape)).encode())
    h.update(data.images.detach().cpu().contiguous().numpy().tobytes())
    h.update(data.labels.cpu().numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise FormatError(f"{path}: unreadable condensation checkpoint ({e})") from None


def real_init(ctx: CondenseContext, g: torch.Generator, n_per_class: int) -> list[torch.Tensor]:
    """Per class, ``n_per_class`` real images (normalized) drawn without replacement, seeded per class."""
    out = []
    for c in range(ctx.num_classes):
        gc = new_generator(ctx.device, derive_seed(int(torch.randint(2**62, (1,), generator=g, device=g.device)), c))
        idx = ctx.class_idx[c]
        perm = torch.randperm(idx.numel(), generator=gc, device=gc.device).to(idx.device)
        if idx.numel() < n_per_class:  # cycle when a class is smaller than what is asked (IDC mix init)
            perm = perm.repeat(-(-n_per_class // idx.numel()))
        out.append(ctx.real_x[idx[perm[:n_per_class]]])
    return out


FP32_LAYERS_NOTE = "convolutions with one input channel run fp32 (fp32_thin_convs)"


def fp32_thin_convs(net: nn.Module) -> int:
    """Run every ``nn.Conv2d`` of ``net`` with one input channel (grey images' first layer) in fp32 under bf16
    autocast (its ``forward`` wrapped on the instance; parameters and state dict unchanged). More precise, and
    faster for gradient matching: oneDNN's bf16 weight-gradient kernel for one input channel is slower than the
    fp32 one (issue 14, 2-core EPYC VM, 1 thread, 256 images 28x28 -> 128 channels: 0.135 s bf16 against 0.057 s
    fp32; forward 0.098 s against 0.148 s). In DC on MNIST (ConvNet-3, compiled, bf16, 1 thread, interleaved in one
    process) an outer round of matching took 8.8 s instead of 10.3 s, an inner epoch 0.31 s instead of 0.33 s.
    Returns how many layers were changed."""
    changed = 0
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels == 1:
            m.forward = types.MethodType(_fp32_conv_forward, m)  # type: ignore[method-assign]
            changed += 1
    return changed


def _fp32_conv_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return nn.Conv2d.forward(conv, x.float())


def _method(net: nn.Module, fn: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if fn == "forward":
        return net
    if fn == "embed":
        return lambda x: model_embed(net, x)
    raise ValueError(f"network function {fn!r}: expected 'forward' or 'embed'")


def class_ce(net: nn.Module, x: torch.Tensor, c: int) -> torch.Tensor:
    return F.cross_entropy(net(x), torch.full((x.shape[0],), c, dtype=torch.long, device=x.device))


# --- the registry --------------------------------------------------------------------------------
CONDENSERS: Registry[type[Condenser]] = Registry("condenser")


def register_condenser(name: str):
    """Class decorator: ``@register_condenser("dm")``."""

    def add(cls: type[Condenser]) -> type[Condenser]:
        cls.name = name
        CONDENSERS.register(name, cls)
        return cls

    return add


def list_condensers(pattern: str = "*") -> list[str]:
    return CONDENSERS.names(pattern)


def create_condenser(name: str) -> Condenser:
    return CONDENSERS.get(name.lower())()
