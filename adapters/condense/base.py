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

import hashlib
import io
import json
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
from harness.engine.protocol import DIGIT_DATASETS, create_protocol
from harness.engine.trainer import seeded_model
from harness.errors import ConfigError, FormatError
from harness.evaluate import evaluate
from harness.io import atomic_write_bytes
from harness.models import create_model, has_running_stats
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

    # -- hooks for subclasses ------------------------------------------------------------------
    def validate(self, real: LabeledImages, ipc: int, config: CondenseConfig) -> None:
        """Extra method-specific checks (before any work); none by default."""
        return None

    def factor(self, config: CondenseConfig) -> int:
        return 1

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
    ) -> CondensedSet:
        """Condense ``real`` to ``ipc`` images per class.

        ``pre_prune``: a :class:`PrePruner` (GoldFromOres: :class:`adapters.condense.goldfromores.PrePrune`)
        applied to the real data first.
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
        ctx = make_context(train, ipc, config, dataset, device)
        # ---- state (fresh or resumed) ------------------------------------------------------
        key = {"method": self.name, "ipc": ipc, "seed": seed, "config": config.run_key(),
               "data": fingerprint(train), "pre_prune": pre_prune.as_dict() if pre_prune else None}
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
        res = evaluate(s, val, proto, runs=cfg.eval_runs, seed=derive_seed(seed, 0xE7A1), device=ctx.device)
        return res.mean

    def _result(self, ctx: CondenseContext, syn: torch.Tensor, seed: int, pre_prune: Any,
                prune_info: dict[str, Any] | None, history: dict[str, Any], n_real: int) -> CondensedSet:
        prov = {"method": self.name, "config": ctx.config.as_dict(), "ipc": ctx.ipc, "seed": seed,
                "source": ctx.real.name, "n_real": n_real, "n_real_used": len(ctx.real),
                "pre_prune": pre_prune.as_dict() if pre_prune is not None else None,
                "pre_prune_result": prune_info, "iterations_done": len(history["loss"]),
                "loss_first_last": [history["loss"][0], history["loss"][-1]] if history["loss"] else [],
                "val_history": history["val"], "val_split": "carved from training data" if history["val"] else None}
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
