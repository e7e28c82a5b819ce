"""The cell-kind interface, its registry, and what every kind shares.

A cell kind turns a merged cell config into accuracies. It has a typed, frozen config
(:class:`CellConfig` subclass) built from the merged cell config by :meth:`CellKind.config`, which
validates every value against the live registries (datasets, protocols, models, recipes, condensers,
loaders, GoldFromOres criteria) and names the YAML file and line of the offending key; the spec
validator builds it for every cell of every scale, so a bad cell fails when the spec is loaded.

:meth:`CellKind.run` receives all pending runs of one cell (:class:`Run`: run index, seed, experiment)
and yields one :class:`KindResult` per run as each is done. Runs whose trained set is the same (a
published set, the full split, or anything upstream of training made from ``upstream_seed``) are
trained together in one :func:`harness.evaluate.evaluate` call when the engine can (``--path
ensemble``, or ``auto`` on a GPU: :func:`trains_together`); otherwise one call per run, so each
record is written as soon as its run is done. Registry in the timm style: :func:`register_cell_kind`,
:func:`list_cell_kinds`, :func:`create_cell_kind`.
"""

from __future__ import annotations

import functools
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from adapters.loaders import LOADERS, list_loaders, load_published
from condensed import CondensedSet
from condensed.prepare import prepare_for_eval
from harness.augment import ZCA
from harness.bench.cells import resolve_protocol
from harness.data import get_spec, load_dataset, resolve_root
from harness.data.images import LabeledImages
from harness.data.specs import DATASETS
from harness.engine import EngineOptions
from harness.engine.protocol import TrainProtocol, create_protocol
from harness.errors import ConfigError
from harness.evaluate import evaluate
from harness.io import config_hash, stable_json
from harness.progress import LineProgress, Progress
from harness.registry import Registry, UnknownNameError
from harness.validate import check_values

Where = Callable[[str], str]
"""``where(key)`` -> ``"file:line"`` of the spec entry that set ``key`` (for error messages)."""


def plain_where(key: str) -> str:
    return f"cell key {key!r}"


# --- results and context ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One run of a cell the runner asks for: its index among the cell's units, seed, and experiment."""

    run: int
    seed: int
    experiment: int | None = None


@dataclass(frozen=True)
class KindResult:
    accuracies: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    protocol_text: str = ""
    engine: dict[str, Any] = field(default_factory=dict)  # how it ran: path, precision, compile
    together: int = 1  # how many runs were trained in the same call


def trains_together(options: EngineOptions, device: str) -> bool:
    """Whether runs sharing a trained set go into one ``evaluate`` call: the ensemble path was asked
    for, or ``auto`` on a GPU (where the engine trains K models as one program). On the CPU ``auto``
    trains one model at a time, so runs are evaluated one by one and recorded as each finishes."""
    return options.path == "ensemble" or (options.path == "auto" and str(device).startswith("cuda"))


@dataclass(frozen=True)
class RunContext:
    """Where a cell runs: device, engine options, data root, caches and its logger. Not part of any hash."""

    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None
    artifacts_dir: str | None = None
    options: EngineOptions = field(default_factory=EngineOptions)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ddbench.bench"))

    @property
    def together(self) -> bool:
        return trains_together(self.options, self.device)

    def artifact(self, kind: str, config: Mapping[str, Any]) -> Path:
        """A directory for an intermediate artifact keyed by the hash of the config that made it."""
        base = Path(self.artifacts_dir or ".ddbench-artifacts")
        d = base / kind / config_hash(dict(config))
        d.mkdir(parents=True, exist_ok=True)
        return d

    def path(self, p: str | Path) -> Path:
        """A spec path: absolute as given, relative under the data root (:func:`harness.data.resolve_root`)."""
        p = Path(str(p))
        return p if p.is_absolute() else resolve_root(self.data_root) / p

    def say(self, msg: str) -> None:
        self.log.info("%s", msg)

    @property
    def progress(self) -> Progress:
        """The flows' progress display for a cell: one log line per finished phase and per note (the runner
        draws the table's own bar)."""
        return _LogProgress(self.log)


class _LogProgress(LineProgress):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__()
        self.log = log

    def write(self, line: str) -> None:
        self.log.info("%s", line)


# --- typed configs ----------------------------------------------------------------------------------
def _named(where: str, err: Exception) -> ConfigError:
    return ConfigError(f"{where}: {err}")


def check_int(cfg: Mapping[str, Any], key: str, where: Where, lo: int = 1, required: bool = False) -> int | None:
    v = cfg.get(key)
    if v is None:
        if required:
            raise ConfigError(f"{where(key)}: this cell kind needs {key!r}")
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{where(key)}: {key} must be an integer >= {lo}, got {v!r}")
    return v


def check_mapping(cfg: Mapping[str, Any], key: str, where: Where) -> dict[str, Any]:
    v = cfg.get(key) or {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where(key)}: {key} must be a mapping, got {v!r}")
    return dict(v)


def check_choice(cfg: Mapping[str, Any], key: str, where: Where, choices: Sequence[str], default: str) -> str:
    v = cfg.get(key, default)
    if v not in choices:
        raise ConfigError(f"{where(key)}: {key} {v!r}: expected one of {', '.join(choices)}")
    return str(v)


def check_dynamics_protocol(cfg: Mapping[str, Any], where: Where) -> str:
    """The cell's ``dynamics_protocol`` (default: its ``protocol``), a registered preset for its dataset."""
    name = str(cfg.get("dynamics_protocol", cfg["protocol"]))
    try:
        create_protocol(name, cfg["dataset"])
    except UnknownNameError as e:
        raise ConfigError(f"{where('dynamics_protocol')}: {e}") from None
    return name


@dataclass(frozen=True)
class CellConfig:
    """What every kind reads: the dataset, the (evaluation) protocol and the scale's data limits."""

    dataset: str
    protocol: str
    protocol_overrides: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    train_per_class: int | None = None
    test_per_class: int | None = None
    hard_label: bool = False
    upstream_seed: int | None = None

    @classmethod
    def common(cls, cfg: Mapping[str, Any], where: Where) -> dict[str, Any]:
        """The shared fields, validated (the dataset and protocol against their registries)."""
        for key in ("dataset", "protocol"):
            if not isinstance(cfg.get(key), str):
                raise ConfigError(f"{where(key)}: the cell has no {key!r} (set it in defaults, the row or the column)")
        try:
            get_spec(cfg["dataset"])
        except UnknownNameError as e:
            raise _named(where("dataset"), e) from None
        out = {"dataset": cfg["dataset"], "protocol": cfg["protocol"],
               "protocol_overrides": check_mapping(cfg, "protocol_overrides", where),
               "model": cfg.get("model"), "train_per_class": check_int(cfg, "train_per_class", where),
               "test_per_class": check_int(cfg, "test_per_class", where),
               "hard_label": bool(cfg.get("hard_label", False)),
               "upstream_seed": check_int(cfg, "upstream_seed", where, lo=0)}
        try:
            resolve_protocol(out)
        except UnknownNameError as e:
            raise _named(where("protocol"), e) from None
        except ConfigError as e:
            key = "protocol_overrides" if out["protocol_overrides"] else "protocol"
            raise _named(where(key), e) from None
        return out

    def train_protocol(self) -> TrainProtocol:
        """The protocol the cell's models are trained and evaluated under (one run each)."""
        return resolve_protocol({"dataset": self.dataset, "protocol": self.protocol,
                                 "protocol_overrides": self.protocol_overrides, "model": self.model})

    def upstream(self, run: Run) -> int:
        """The seed of the work upstream of training for ``run``: ``upstream_seed``, else the run's seed."""
        return run.seed if self.upstream_seed is None else self.upstream_seed


@dataclass(frozen=True)
class PublishedSource:
    """A published condensed set: format (a loader of :mod:`adapters.loaders`), path, loader options, experiment."""

    format: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    experiment: int = 0

    @classmethod
    def from_cell(cls, cfg: Mapping[str, Any], where: Where) -> PublishedSource:
        fmt = cfg.get("source_format", "vico")
        if fmt not in LOADERS:
            raise ConfigError(f"{where('source_format')}: unknown format {fmt!r} (known: {', '.join(list_loaders())})")
        if not cfg.get("source_path"):
            raise ConfigError(f"{where('source')}: a published source needs 'source_path'")
        opts = check_values(LOADERS.get(fmt), check_mapping(cfg, "source_options", where),
                            f"{where('source_options')}: {fmt} loader option", exclude=("experiment",))
        if cfg.get("experiment") is not None and cfg.get("experiments") is not None:
            raise ConfigError(f"{where('experiments')}: give 'experiment' or 'experiments', not both")
        exps = cfg.get("experiments")
        if exps is not None and (not isinstance(exps, list) or not exps or len(set(exps)) != len(exps) or not all(
                isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in exps)):
            raise ConfigError(f"{where('experiments')}: experiments must be a list of distinct indices >= 0, "
                              f"got {exps!r}")
        return cls(str(fmt), str(cfg["source_path"]), opts, check_int(cfg, "experiment", where, lo=0) or 0)

    def load(self, ctx: RunContext, experiment: int | None = None) -> CondensedSet:
        """The set of ``experiment`` (default: this source's) in the file; loaded once per process."""
        sets = _load_published(self.format, str(ctx.path(self.path)), stable_json(self.options))
        exp = self.experiment if experiment is None else experiment
        if exp >= len(sets):
            raise ConfigError(f"{ctx.path(self.path)}: experiment {exp} requested, the file holds {len(sets)}")
        return sets[exp]


@functools.lru_cache(maxsize=4)
def _load_published(fmt: str, path: str, options: str) -> tuple[CondensedSet, ...]:
    return tuple(load_published(fmt, path, **json.loads(options)))


def experiments_ok(cfg: Mapping[str, Any], where: Where, source: str) -> None:
    """``experiments`` only means something for a published source."""
    if cfg.get("experiments") is not None and source != "published":
        raise ConfigError(f"{where('experiments')}: experiments index a published file; this cell's source is "
                          f"{source!r}")


# --- the kind interface and registry -----------------------------------------------------------------
class CellKind(ABC):
    """One kind of table cell. Subclasses set ``config_cls`` and implement :meth:`config` and :meth:`run`."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[CellConfig]] = CellConfig

    @abstractmethod
    def config(self, cfg: Mapping[str, Any], where: Where = plain_where) -> CellConfig:
        """The typed config of a merged cell config (raises :class:`ConfigError` naming ``where(key)``)."""

    @abstractmethod
    def run(self, config: Any, runs: Sequence[Run], ctx: RunContext) -> Iterator[tuple[Run, KindResult]]:
        """Compute ``runs`` (all pending runs of one cell); yield each run's result as it is done."""


CELL_KINDS: Registry[type[CellKind]] = Registry("cell kind")


def register_cell_kind(name: str):
    """Class decorator: ``@register_cell_kind("evaluate") class Evaluate(CellKind): ...``."""

    def add(cls: type[CellKind]) -> type[CellKind]:
        cls.name = name
        return CELL_KINDS.register(name, cls)

    return add


def list_cell_kinds() -> list[str]:
    return CELL_KINDS.names()


def create_cell_kind(name: str) -> CellKind:
    try:
        return CELL_KINDS.get(name)()
    except UnknownNameError as e:
        raise ConfigError(str(e)) from None


# --- data ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _load(name: str, split: str, data_root: str | None, cache_dir: str | None) -> LabeledImages:
    return load_dataset(name, split, data_root=data_root, cache_dir=cache_dir)


def load_split(dataset: str, split: str, ctx: RunContext) -> LabeledImages:
    """A whole split of ``dataset`` (loaded once per process)."""
    return _load(dataset, split, ctx.data_root, ctx.cache_dir)


def limit_per_class(data: LabeledImages, k: int | None, seed: int = 0) -> LabeledImages:
    """At most ``k`` images per class, drawn from ``seed`` (the same subset for every cell)."""
    if not k:
        return data
    g = torch.Generator().manual_seed(seed)
    keep = []
    for idx in data.class_indices():
        keep.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
    return data.subset(torch.cat(keep).sort().values)


def test_split(cfg: CellConfig, ctx: RunContext) -> LabeledImages:
    """The cell's test split, limited per class as the scale asks (seed 0)."""
    return limit_per_class(load_split(cfg.dataset, "test", ctx), cfg.test_per_class, seed=0)


def train_test(cfg: CellConfig, ctx: RunContext) -> tuple[LabeledImages, LabeledImages]:
    """The cell's real training and test splits, limited per class as the scale asks (seed 0)."""
    return limit_per_class(load_split(cfg.dataset, "train", ctx), cfg.train_per_class, seed=0), test_split(cfg, ctx)


def scaled_dataset(cfg: CellConfig, ctx: RunContext) -> str:
    """The dataset name a flow that loads by name should use: the cell's, or a per-class-limited subset
    registered in process as ``<name>~<k>x<t>`` (the first-seeded ``k`` training and ``t`` test images
    per class of ``<name>``, as :func:`train_test` draws them)."""
    name, k, t = cfg.dataset, cfg.train_per_class, cfg.test_per_class
    if not k and not t:
        return name
    derived = f"{name}~{k or 'all'}x{t or 'all'}"
    if derived in DATASETS:
        return derived
    base = get_spec(name)
    root, cache = ctx.data_root, ctx.cache_dir

    def reader(_root: Path, split: str, download: bool):
        data = limit_per_class(load_dataset(name, split, data_root=root, cache_dir=cache),
                               k if split == "train" else t, seed=0)
        return data.images, data.labels, data.class_names

    DATASETS.register(derived, replace(base, name=derived, reader=reader, embedded=True,
                                       note=f"{name} limited to {k}/{t} images per class (bench scale)"))
    return derived


def groups(runs: Sequence[Run], key: Callable[[Run], Any]) -> list[tuple[Any, list[Run]]]:
    """``runs`` partitioned by ``key`` (first-seen order), e.g. by the seed of their shared upstream work."""
    out: dict[Any, list[Run]] = {}
    for r in runs:
        out.setdefault(key(r), []).append(r)
    return list(out.items())


# --- evaluation ---------------------------------------------------------------------------------------
def engine_record(options: EngineOptions, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """How a run was computed: the requested engine options and what ran (``path_run``, ``precision_run``,
    ``compile_run``, resolved, with the reasons :func:`harness.evaluate.evaluate` gave)."""
    out = dict(options.as_dict())
    ran = {"path": "path_run", "precision": "precision_run", "compile": "compile_run"}
    for key, value in (extra or {}).items():
        if key in ran:
            out[ran[key]] = value
        elif key in ("precision_reason", "precision_fallback", "compile_reason", "path_fallback"):
            out[key] = value
    return out


def evaluate_runs(train_set: LabeledImages, test: LabeledImages, cfg: CellConfig, ctx: RunContext,
                  runs: Sequence[Run], *, zca: ZCA | None = None, extra: Mapping[str, Any] | None = None
                  ) -> Iterator[tuple[Run, KindResult]]:
    """Train fresh models on ``train_set`` for ``runs`` (each from its seed) and yield each run's final-epoch
    test accuracy: one ``evaluate`` call for all of them when :attr:`RunContext.together`, else one per run."""
    proto = cfg.train_protocol()
    if cfg.hard_label and train_set.soft_labels is not None:
        train_set = replace(train_set, soft_labels=None)
        proto = proto.with_(loss="ce")
    batches = [list(runs)] if ctx.together else [[r] for r in runs]
    for batch in batches:
        seeds = [r.seed for r in batch]
        res = evaluate(train_set, test, proto, seeds=seeds, device=ctx.device, zca=zca, options=ctx.options)
        if list(res.seeds) != seeds:
            raise RuntimeError(f"evaluate returned seeds {list(res.seeds)} for {seeds}")
        for r, acc in zip(batch, res.accuracies):
            yield r, KindResult((acc,), {"n_train": res.n_train, **(extra or {})}, res.protocol, proto.describe(),
                                engine_record(ctx.options, res.extra), len(batch))


def evaluate_condensed(cs: CondensedSet, cfg: CellConfig, ctx: RunContext, runs: Sequence[Run],
                       extra: Mapping[str, Any]) -> Iterator[tuple[Run, KindResult]]:
    """A condensed set (decoded; ZCA refitted on the real training split) evaluated on the cell's test split."""
    li, zca = prepare_for_eval(cs, cfg.dataset, ctx.data_root, ctx.cache_dir)
    yield from evaluate_runs(li, test_split(cfg, ctx), cfg, ctx, runs, zca=zca, extra=extra)


__all__ = ["CELL_KINDS", "CellConfig", "CellKind", "KindResult", "PublishedSource", "Run", "RunContext", "Where",
           "check_choice", "check_int", "check_mapping", "create_cell_kind", "evaluate_condensed", "evaluate_runs",
           "experiments_ok", "groups", "limit_per_class", "list_cell_kinds", "load_split", "plain_where",
           "register_cell_kind", "scaled_dataset", "test_split", "train_test", "trains_together"]
