"""Cells: the grid of a spec expanded into configs, their hashes, and the registry of cell kinds.

A :class:`Cell` is one (dataset, row, column) entry with its fully merged config. A :class:`WorkUnit`
is one run of a cell (one seed); the store keeps one record per work unit. Both are keyed by the
sha256 of their config as stable JSON (sorted keys, no whitespace), so the same config always
maps to the same file, whatever the spec file or the order of its keys.

Cell kinds are a registry: ``register_cell_kind(name, fn)`` with ``fn(config, ctx) -> KindResult``
where ``config`` is the merged cell config for **one** run (``seed`` set, ``runs == 1``). Kinds:

- ``evaluate``: a random real subset (``source: random_real``, ``ipc``), the (limited) full training
  split (``source: full``) or a published condensed set (``source: published``) trained under
  the cell's protocol via :func:`harness.evaluate.evaluate_set`.
- ``coreset`` / ``condense`` / ``shrink``: thin wrappers over the library flows in
  ``harness.pruning.coreset``, ``adapters.condense`` and ``condensed.shrink`` (imported lazily).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import ConfigError
from harness.registry import Registry

if TYPE_CHECKING:
    from harness.bench.spec import Published, TableSpec
    from harness.data.images import LabeledImages
    from harness.engine.protocol import TrainProtocol

DISPLAY_KEYS = ("label", "published", "published_std", "x", "fairness", "follows")


def stable_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, tuples as lists; floats as Python repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_jsonable)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot hash a {type(o).__name__} in a cell config")


def config_hash(obj: Any, n: int = 16) -> str:
    """sha256 of :func:`stable_json` (first ``n`` hex digits)."""
    return hashlib.sha256(stable_json(obj).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Cell:
    table: str
    dataset: str
    row: str
    column: str
    config: dict[str, Any]  # merged, scale applied, display keys removed
    scale: str
    origin: tuple[Any, ...] = ()
    x: float | None = None
    published: Published | None = None
    role: str = "main"  # main | random_real | hard_label (fairness siblings)
    follows: str = ""  # whose protocol the row follows (display only, not hashed)

    @property
    def key(self) -> str:
        return config_hash({"cell": self.config, "scale": self.scale})

    @property
    def seeds(self) -> list[int]:
        runs = int(self.config.get("runs", 1))
        seeds = self.config.get("seeds")
        if seeds:
            if len(seeds) < runs:
                raise ConfigError(f"cell ({self.row}, {self.column}): {runs} runs but only {len(seeds)} seeds")
            return list(seeds[:runs])
        base = int(self.config.get("seed", 0))
        return [base + r for r in range(runs)]

    def units(self) -> list[WorkUnit]:
        return [WorkUnit(self, r, s) for r, s in enumerate(self.seeds)]


@dataclass(frozen=True)
class WorkUnit:
    """One run of a cell: the thing an executor runs and the store records."""

    cell: Cell
    run: int
    seed: int

    @property
    def run_config(self) -> dict[str, Any]:
        cfg = {k: v for k, v in self.cell.config.items() if k not in ("seeds", "seed", "runs")}
        return {**cfg, "seed": self.seed, "runs": 1}

    @property
    def key(self) -> str:
        return config_hash({"cell": self.cell.key, "run": self.run, "seed": self.seed})


def apply_scale(cfg: dict[str, Any], scale: Mapping[str, Any]) -> dict[str, Any]:
    from harness.bench.spec import merge

    out = merge(cfg, scale)
    if "dynamics_epochs" in scale and cfg.get("kind") not in ("coreset", "shrink"):
        out.pop("dynamics_epochs")  # only kinds that record dynamics use it
    if "params" in scale and "params" not in cfg:
        out.pop("params")
    if "train_per_class" in cfg and "train_per_class" in scale:
        out["train_per_class"] = min(int(cfg["train_per_class"]), int(scale["train_per_class"]))
    return out


def expand(spec: TableSpec, scale: str = "full") -> list[Cell]:
    """All cells of ``spec`` under ``scale``, in table order (dataset, row, column)."""
    from harness.bench.spec import GLOBAL_DEFAULTS, merge, parse_published

    sc = dict(spec.scale(scale))
    dataset_map = dict(sc.pop("dataset_map", None) or {})
    skip = set(sc.pop("skip_datasets", None) or ())
    only_cols = set(sc.pop("only_columns", None) or ())
    sc.pop("about", None)  # display only
    out: list[Cell] = []
    for dataset in spec.datasets:
        for row in spec.rows:
            for col in spec.columns:
                cfg = merge(GLOBAL_DEFAULTS, spec.defaults)
                if dataset is not None:
                    cfg["dataset"] = dataset
                if dataset is not None and "dataset" in col.config and col.config["dataset"] != dataset:
                    continue  # a dataset-specific column under another dataset
                cfg = merge(cfg, row.config)
                cfg = merge(cfg, col.config)
                cfg = merge(cfg, spec.cells.get((row.label, col.label), {}))
                if only_cols and col.label not in only_cols:
                    continue
                pubs = dict(row.config.get("published") or {})
                ds_key = cfg.get("dataset")
                if isinstance(pubs.get(ds_key), Mapping):  # published numbers keyed by dataset
                    pubs = dict(pubs[ds_key])
                pub_raw = pubs.get(col.label)
                published = parse_published(pub_raw, spec.where(row.path)) if pub_raw is not None else None
                if published is not None and (row.config.get("published_std") or {}).get(col.label) is not None:
                    from dataclasses import replace

                    published = replace(published, std=float(row.config["published_std"][col.label]))
                x = cfg.get("x", cfg.get("ipc", cfg.get("prune_rate")))
                fair = bool(cfg.get("fairness", spec.fairness))
                follows = str(cfg.get("follows", ""))
                cfg = {k: v for k, v in cfg.items() if k not in DISPLAY_KEYS}
                if cfg.get("dataset") in skip:
                    continue
                cfg = apply_scale(cfg, sc)
                if cfg.get("dataset") in dataset_map:
                    cfg["dataset"] = dataset_map[cfg["dataset"]]
                ds = str(cfg.get("dataset", ""))
                cell = Cell(spec.name, ds, row.label, col.label, cfg, scale, col.path, x, published,
                            follows=follows)
                out.append(cell)
                if fair and cfg.get("kind") in ("condense", "shrink") and "ipc" in cfg:
                    out.extend(fairness_cells(cell))
    # drop exact duplicates (fairness siblings shared by several rows), keep the first
    seen: set[tuple[str, str, str, str]] = set()
    uniq = []
    for c in out:
        k = (c.dataset, c.row, c.column, c.key)
        if k not in seen:
            seen.add(k)
            uniq.append(c)
    return uniq


def fairness_cells(cell: Cell) -> list[Cell]:
    """DD-Ranking-style siblings: a same-IPC random real subset under the identical protocol, and
    the same set evaluated with hard labels."""
    keep = ("dataset", "protocol", "protocol_overrides", "model", "runs", "seeds", "seed", "ipc",
            "train_per_class", "test_per_class")
    rnd = {k: v for k, v in cell.config.items() if k in keep}
    rnd.update(kind="evaluate", source="random_real")
    hard = {**cell.config, "hard_label": True}
    return [Cell(cell.table, cell.dataset, f"random real (IPC {cell.config['ipc']})", cell.column, rnd,
                 cell.scale, cell.origin, cell.x, None, "random_real", cell.follows),
            Cell(cell.table, cell.dataset, f"{cell.row} [hard label]", cell.column, hard, cell.scale,
                 cell.origin, cell.x, None, "hard_label", cell.follows)]


# --- cell kinds ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KindResult:
    accuracies: tuple[float, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    protocol_text: str = ""


@dataclass(frozen=True)
class RunContext:
    """Where a work unit runs: device, data root, caches and its logger. Not part of any hash."""

    device: str = "cpu"
    data_root: str | None = None
    cache_dir: str | None = None
    artifacts_dir: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ddbench.bench"))

    def artifact(self, kind: str, config: Mapping[str, Any]) -> Path:
        """A directory for an intermediate artifact keyed by the hash of the config that made it."""
        base = Path(self.artifacts_dir or ".ddbench-artifacts")
        d = base / kind / config_hash(dict(config))
        d.mkdir(parents=True, exist_ok=True)
        return d


CellFn = Callable[[dict[str, Any], RunContext], KindResult]
CELL_KINDS: Registry[CellFn] = Registry("cell kind")


def register_cell_kind(name: str, fn: CellFn | None = None):
    return CELL_KINDS.register(name, fn)


def list_cell_kinds() -> list[str]:
    return CELL_KINDS.names()


def get_cell_kind(name: str) -> CellFn:
    return CELL_KINDS.get(name)


# --- shared helpers for kinds --------------------------------------------------------------------
def resolve_protocol(cfg: Mapping[str, Any]) -> TrainProtocol:
    from harness.engine.protocol import create_protocol

    over = dict(cfg.get("protocol_overrides") or {})
    proto = create_protocol(cfg["protocol"], cfg["dataset"], **over)
    if proto.iterations is not None and "epochs" in over and "iterations" not in over:
        raise ConfigError(f"protocol {proto.name}: trains {proto.iterations} iterations, so protocol_overrides "
                          f"epochs={over['epochs']} would be ignored; also set iterations (null for epochs)")
    if cfg.get("model"):
        proto = proto.with_(model=cfg["model"])
    return proto.with_(runs=1)


@functools.lru_cache(maxsize=8)
def _load(name: str, split: str, data_root: str | None, cache_dir: str | None) -> LabeledImages:
    from harness.data import load_dataset

    return load_dataset(name, split, data_root=data_root, cache_dir=cache_dir)


def load_split(cfg: Mapping[str, Any], split: str, ctx: RunContext) -> LabeledImages:
    root = ctx.data_root or os.environ.get("DDBENCH_DATA")
    return _load(cfg["dataset"], split, root, ctx.cache_dir)


def limit_per_class(data: LabeledImages, k: int | None, seed: int = 0) -> LabeledImages:
    """At most ``k`` images per class, drawn from ``seed`` (the same subset for every cell)."""
    if not k:
        return data
    import torch

    g = torch.Generator().manual_seed(seed)
    keep = []
    for idx in data.class_indices():
        keep.append(idx[torch.randperm(idx.numel(), generator=g)[:k]])
    return data.subset(torch.cat(keep).sort().values)


def train_test(cfg: Mapping[str, Any], ctx: RunContext) -> tuple[LabeledImages, LabeledImages]:
    """The cell's real training and test splits, limited per class as the scale asks (seed 0)."""
    train = limit_per_class(load_split(cfg, "train", ctx), cfg.get("train_per_class"), seed=0)
    test = limit_per_class(load_split(cfg, "test", ctx), cfg.get("test_per_class"), seed=0)
    return train, test


def _eval(train_set: LabeledImages, test: LabeledImages, cfg: Mapping[str, Any], ctx: RunContext,
          extra: dict[str, Any] | None = None) -> KindResult:
    from harness.evaluate import evaluate_set

    proto = resolve_protocol(cfg)
    if cfg.get("hard_label") and train_set.soft_labels is not None:
        from dataclasses import replace

        train_set = replace(train_set, soft_labels=None)
        proto = proto.with_(loss="ce")
    res = evaluate_set(train_set, test, proto, runs=1, seed=int(cfg["seed"]), device=ctx.device)
    return KindResult(res.accuracies, {"n_train": res.n_train, **(extra or {})}, res.protocol, proto.describe())


def _published_set(cfg: Mapping[str, Any], ctx: RunContext) -> LabeledImages:
    from adapters.loaders import load_published

    path = Path(str(cfg["source_path"]))
    if not path.is_absolute():
        root = ctx.data_root or os.environ.get("DDBENCH_DATA") or "."
        path = Path(root) / path
    sets = load_published(str(cfg.get("source_format", "vico")), path)
    exp = int(cfg.get("experiment", 0))
    if exp >= len(sets):
        raise ConfigError(f"{path}: experiment {exp} requested, the file holds {len(sets)}")
    return sets[exp].decoded().to_labeled()


def evaluate_cell(cfg: dict[str, Any], ctx: RunContext) -> KindResult:
    """Train fresh models on a random real subset, the full split or a published set."""
    import torch

    from harness.evaluate import random_per_class

    train, test = train_test(cfg, ctx)
    source = cfg.get("source", "random_real")
    if source == "random_real":
        if "ipc" not in cfg:
            raise ConfigError("evaluate source random_real needs 'ipc'")
        full = load_split(cfg, "train", ctx)  # the subset is drawn from the whole split
        idx = random_per_class(full.labels, int(cfg["ipc"]), int(cfg["seed"]), full.num_classes)
        return _eval(full.subset(idx), test, cfg, ctx, {"indices_sha": config_hash(idx.tolist())})
    if source == "full":
        return _eval(train, test, cfg, ctx)
    if source == "published":
        s = _published_set(cfg, ctx)
        return _eval(s, test, cfg, ctx, {"n_set": len(s), "ipc": int(torch.bincount(s.labels).max())})
    raise ConfigError(f"evaluate: unknown source {source!r} (random_real | full | published)")


register_cell_kind("evaluate", evaluate_cell)


def _missing(module: str, what: str, err: Exception) -> ConfigError:
    return ConfigError(f"cell kind needs {what} from {module}, which is not available yet ({err})")


def coreset_cell(cfg: dict[str, Any], ctx: RunContext) -> KindResult:
    """Flow 1: dynamics -> score -> select -> evaluate, via ``harness.pruning.coreset.run_coreset``."""
    try:
        from harness.pruning.coreset import run_coreset
    except ImportError as e:
        raise _missing("harness.pruning.coreset", "run_coreset", e) from None
    from harness.bench import adapters

    return adapters.run_coreset_cell(run_coreset, cfg, ctx)


def condense_cell(cfg: dict[str, Any], ctx: RunContext) -> KindResult:
    """Flow 2: (GoldFromOres pre-prune) -> Condenser -> evaluate, via ``adapters.condense``."""
    try:
        import adapters.condense as condense_mod
    except ImportError as e:
        raise _missing("adapters.condense", "the condensers", e) from None
    from harness.bench import adapters

    return adapters.run_condense_cell(condense_mod, cfg, ctx)


def shrink_cell(cfg: dict[str, Any], ctx: RunContext) -> KindResult:
    """Flow 3: condensed source -> YOCO/coreset selection to a smaller IPC -> evaluate."""
    try:
        import condensed.shrink as shrink_mod
    except ImportError as e:
        raise _missing("condensed.shrink", "shrink", e) from None
    from harness.bench import adapters

    return adapters.run_shrink_cell(shrink_mod, cfg, ctx)


register_cell_kind("coreset", coreset_cell)
register_cell_kind("condense", condense_cell)
register_cell_kind("shrink", shrink_cell)


# --- names for validation ---------------------------------------------------------------------
def known_recipes() -> set[str]:
    """Every recipe name a cell can run: the pruning recipes with YOCO's suffixes, plus the shrink
    aliases (YOCO's ``accumulated_margin``, ``ccs``) with theirs."""
    from condensed.shrink import RULE_ALIASES
    from harness.pruning import list_recipes

    suffixes = [a + b for a in ("", "_easy", "_hard") for b in ("", "_balance", "_imbalance")]
    return set(list_recipes(expanded=True)) | {n + s for n in RULE_ALIASES for s in suffixes}


def known_methods() -> set[str]:
    """Condenser names (``dc``, ``dsa``, ``dm``, ``idc``), in any case."""
    from adapters.condense import list_condensers

    names = set(list_condensers())
    return names | {n.upper() for n in names}
