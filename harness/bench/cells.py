"""Cells: the grid of a spec expanded into configs and their work units, keyed by config hashes.

A :class:`Cell` is one (dataset, row, column) entry with its fully merged config. A :class:`WorkUnit`
is one run of a cell (one seed; with ``experiments``, one run of one experiment); the store keeps one
record per work unit. Both are keyed by :func:`harness.io.config_hash` of their config (sha256 of
stable JSON: sorted keys, no whitespace), so the same config always maps to the same file, whatever
the spec file or the order of its keys. The engine options a table runs with (``--path``,
``--precision``, ``--compile``) are not part of any key: the same cell computed faster is the same cell.

Each cell also knows where each of its keys was set (``sources``: the YAML path of the defaults, row,
column, cell override or scale that set it last), so a kind's config error names that file and line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from harness.bench.schema import (
    DISPLAY_KEYS,
    EXPERIMENT_SEED_STRIDE,
    GLOBAL_DEFAULTS,
    Published,
    TableSpec,
    merge,
    parse_published,
)
from harness.data import get_spec
from harness.engine.protocol import TrainProtocol, create_protocol
from harness.errors import ConfigError
from harness.io import config_hash, stable_json

__all__ = ["Cell", "WorkUnit", "apply_scale", "config_hash", "expand", "fairness_cells", "resolve_protocol",
           "stable_json"]

# kinds that record dynamics (the only ones a scale's dynamics_epochs applies to)
DYNAMICS_KINDS = ("coreset", "shrink")


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
    sources: dict[str, tuple[Any, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        return config_hash({"cell": self.config, "scale": self.scale})

    @property
    def seeds(self) -> list[int]:
        """The seeds of the cell's runs (per experiment: see :meth:`units`)."""
        runs = int(self.config.get("runs", 1))
        seeds = self.config.get("seeds")
        if seeds:
            if len(seeds) < runs:
                raise ConfigError(f"cell ({self.row}, {self.column}): {runs} runs but only {len(seeds)} seeds")
            return list(seeds[:runs])
        base = int(self.config.get("seed", 0))
        return [base + r for r in range(runs)]

    @property
    def experiments(self) -> list[int] | None:
        exps = self.config.get("experiments")
        return None if exps is None else [int(e) for e in exps]

    def units(self) -> list[WorkUnit]:
        """One unit per run; with ``experiments``, one per (experiment, run), seeds + 1000 * experiment."""
        if self.experiments is None:
            return [WorkUnit(self, r, s) for r, s in enumerate(self.seeds)]
        seeds = self.seeds
        return [WorkUnit(self, i * len(seeds) + r, s + EXPERIMENT_SEED_STRIDE * e, e)
                for i, e in enumerate(self.experiments) for r, s in enumerate(seeds)]

    def where(self, spec: TableSpec, key: str) -> str:
        """``file:line`` of the mapping that set ``key`` (or of the cell's column)."""
        src = self.sources.get(key)
        return spec.where(src + (key,)) if src is not None else spec.where(self.origin)


@dataclass(frozen=True)
class WorkUnit:
    """One run of a cell: the thing the runner claims and the store records."""

    cell: Cell
    run: int
    seed: int
    experiment: int | None = None

    @property
    def run_config(self) -> dict[str, Any]:
        cfg = {k: v for k, v in self.cell.config.items() if k not in ("seeds", "seed", "runs", "experiments")}
        out = {**cfg, "seed": self.seed, "runs": 1}
        if self.experiment is not None:
            out["experiment"] = self.experiment
        return out

    @property
    def key(self) -> str:
        blob: dict[str, Any] = {"cell": self.cell.key, "run": self.run, "seed": self.seed}
        if self.experiment is not None:
            blob["experiment"] = self.experiment
        return config_hash(blob)


def _merge_tracked(cfg: dict[str, Any], src: dict[str, tuple[Any, ...]], over: Mapping[str, Any],
                   path: tuple[Any, ...]) -> dict[str, Any]:
    for k in over:
        src[k] = path
    return merge(cfg, over)


def apply_scale(cfg: dict[str, Any], scale: Mapping[str, Any],
                src: dict[str, tuple[Any, ...]] | None = None, path: tuple[Any, ...] = ()) -> dict[str, Any]:
    """``cfg`` under a scale's overrides (grid-shaping keys already removed from ``scale``)."""
    src = {} if src is None else src
    out = _merge_tracked(cfg, src, scale, path)
    if "dynamics_epochs" in scale and cfg.get("kind") not in DYNAMICS_KINDS:
        out.pop("dynamics_epochs")  # only kinds that record dynamics use it
    if "params" in scale and "params" not in cfg:
        out.pop("params")  # a scale's params only change cells that have some
    if "train_per_class" in cfg and "train_per_class" in scale:
        out["train_per_class"] = min(int(cfg["train_per_class"]), int(scale["train_per_class"]))
    for k in list(src):
        if k not in out:
            src.pop(k)
    return out


def expand(spec: TableSpec, scale: str = "full") -> list[Cell]:
    """All cells of ``spec`` under ``scale``, in table order (dataset, row, column)."""
    sc = dict(spec.scale(scale))
    scale_path = ("scales", scale)
    dataset_map = dict(sc.pop("dataset_map", None) or {})
    skip = set(sc.pop("skip_datasets", None) or ())
    only_cols = set(sc.pop("only_columns", None) or ())
    only_rows = set(sc.pop("only_rows", None) or ())
    row_over = dict(sc.pop("row_overrides", None) or {})
    sc.pop("about", None)  # display only
    out: list[Cell] = []
    for di, dataset in enumerate(spec.datasets):
        for row in spec.rows:
            if only_rows and row.label not in only_rows:
                continue
            row_cols = set(row.config.get("only_columns") or ())
            for col in spec.columns:
                if only_cols and col.label not in only_cols:
                    continue
                if row_cols and col.label not in row_cols:
                    continue
                if dataset is not None and "dataset" in col.config and col.config["dataset"] != dataset:
                    continue  # a dataset-specific column under another dataset
                src: dict[str, tuple[Any, ...]] = {k: () for k in GLOBAL_DEFAULTS}
                cfg = _merge_tracked(dict(GLOBAL_DEFAULTS), src, spec.defaults, ("defaults",))
                if dataset is not None:
                    cfg = _merge_tracked(cfg, src, {"dataset": dataset}, ("datasets", di))
                cfg = _merge_tracked(cfg, src, row.config, row.path)
                cfg = _merge_tracked(cfg, src, col.config, col.path)
                over_path = spec.cell_paths.get((row.label, col.label), ("cells",))
                cfg = _merge_tracked(cfg, src, spec.cells.get((row.label, col.label), {}), over_path)
                pubs = dict(row.config.get("published") or {})
                ds_key = cfg.get("dataset")
                if isinstance(pubs.get(ds_key), Mapping):  # published numbers keyed by dataset
                    pubs = dict(pubs[ds_key])
                pub_raw = pubs.get(col.label)
                published = parse_published(pub_raw, spec.where(row.path)) if pub_raw is not None else None
                if published is not None and (row.config.get("published_std") or {}).get(col.label) is not None:
                    published = replace(published, std=float(row.config["published_std"][col.label]))
                x = cfg.get("x", cfg.get("ipc", cfg.get("prune_rate")))
                fair = bool(cfg.get("fairness", spec.fairness))
                follows = str(cfg.get("follows", ""))
                cfg = {k: v for k, v in cfg.items() if k not in DISPLAY_KEYS}
                if cfg.get("dataset") in skip:
                    continue
                cfg = apply_scale(cfg, sc, src, scale_path)
                if row.label in row_over:
                    cfg = _merge_tracked(cfg, src, row_over[row.label], scale_path + ("row_overrides", row.label))
                if cfg.get("dataset") in dataset_map:
                    original, cfg["dataset"] = cfg["dataset"], dataset_map[cfg["dataset"]]
                    if get_spec(cfg["dataset"]).copy_of != original:  # another dataset: no paper number applies
                        published = None
                src = {k: v for k, v in src.items() if k in cfg}
                cell = Cell(spec.name, str(cfg.get("dataset", "")), row.label, col.label, cfg, scale, col.path, x,
                            published, follows=follows, sources=src)
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
    keep = ("dataset", "protocol", "protocol_overrides", "model", "runs", "seeds", "seed", "upstream_seed", "ipc",
            "train_per_class", "test_per_class")
    rnd = {k: v for k, v in cell.config.items() if k in keep}
    rnd.update(kind="evaluate", source="random_real")
    hard = {**cell.config, "hard_label": True}
    src = {k: v for k, v in cell.sources.items() if k in rnd}
    return [Cell(cell.table, cell.dataset, f"random real (IPC {cell.config['ipc']})", cell.column, rnd,
                 cell.scale, cell.origin, cell.x, None, "random_real", cell.follows, src),
            Cell(cell.table, cell.dataset, f"{cell.row} [hard label]", cell.column, hard, cell.scale,
                 cell.origin, cell.x, None, "hard_label", cell.follows, dict(cell.sources))]


def resolve_protocol(cfg: Mapping[str, Any]) -> TrainProtocol:
    """A cell config's protocol: the preset for its dataset, ``protocol_overrides`` and ``model`` applied, one run."""
    over = dict(cfg.get("protocol_overrides") or {})
    proto = create_protocol(cfg["protocol"], cfg["dataset"], **over)
    if proto.iterations is not None and "epochs" in over and "iterations" not in over:
        raise ConfigError(f"protocol {proto.name}: trains {proto.iterations} iterations, so protocol_overrides "
                          f"epochs={over['epochs']} would be ignored; also set iterations (null for epochs)")
    if cfg.get("model"):
        proto = proto.with_(model=cfg["model"])
    return proto.with_(runs=1)
